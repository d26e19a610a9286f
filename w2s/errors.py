"""The one exception type that the CLI turns into a single clear error line."""


class UserError(Exception):
  """Bad input from the user: config, data, checkpoint or workdir.

  The message must say what is wrong and how to fix it; `w2s.main` prints it
  as one line and exits non-zero without a traceback.
  """
