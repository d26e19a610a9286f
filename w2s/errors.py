"""The one exception type that the CLI turns into a single clear error line, and the test for
the one environment failure it also reports that way (a full disk)."""
import errno


class UserError(Exception):
  """Bad input from the user: config, data, checkpoint or workdir.

  The message must say what is wrong and how to fix it; `w2s.main` prints it
  as one line and exits non-zero without a traceback.
  """


def disk_full(e: BaseException | str | None) -> bool:
  """True when `e` (an exception or a logged message) is a write that failed for lack of space
  (ENOSPC, or a quota: EDQUOT), also as orbax / tensorstore wrap it (a ValueError whose text
  carries the OS message)."""
  if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
    return True
  text = '' if e is None else str(e)
  return 'No space left on device' in text or 'Disk quota exceeded' in text
