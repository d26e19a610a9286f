"""Command-line entry point: `python -m w2s.main --config configs/<exp>.py[:arg] --workdir DIR`.

Thin by design: it parses flags, optionally joins a multi-host run, and calls
`w2s.train.train_and_evaluate(config, workdir)`, the same function a notebook calls. Bad input
(`w2s.errors.UserError`) becomes one `error:` line on stderr and exit status 2.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file[:arg].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results.')
_DISTRIBUTED = flags.DEFINE_bool('jax_distributed', False,
                                 'Call jax.distributed.initialize() first (TPU pods, multi-host GPU).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 '
                                   '(auto-detected on TPU pods and SLURM).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes (auto on pods).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process (auto on pods).')
_LOCAL_DEVICES = flags.DEFINE_integer('cpu_devices_per_process', None,
                                      'CPU only: devices per process (local multi-process testing).')
flags.mark_flags_as_required(['config', 'workdir'])

PREEMPTED_EXIT = 143  # 128 + SIGTERM: schedulers treat it as "requeue me"


def main(argv):
  del argv
  from absl import logging
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from w2s import checkpoint, sharding, train
  from w2s.errors import UserError
  try:
    config = _load_config()
    if _DISTRIBUTED.value:
      sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                      _LOCAL_DEVICES.value)
    train.train_and_evaluate(config, _WORKDIR.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  except checkpoint.Preempted as e:
    print(f'preempted: {e}', file=sys.stderr, flush=True)
    sys.exit(PREEMPTED_EXIT)


def _load_config():
  """The parsed config; a config file that failed to load is a UserError (one line)."""
  from w2s.errors import UserError
  config = _CONFIG.value
  try:
    config.keys()
  except OSError as e:  # config_flags defers load errors to the first access
    detail = ' '.join(str(e).split())
    raise UserError(f'cannot load --config: {detail}') from e
  return config


def _flag_error_line(e: BaseException) -> str:
  """One line for an exception raised while absl parsed the flags (config file or override)."""
  from w2s.errors import UserError
  for cause in (e, e.__cause__, e.__context__):
    if isinstance(cause, UserError):
      return str(cause)
  if isinstance(e, (AttributeError, KeyError)):
    key = str(e).strip('"\'')
    overrides = [a for a in sys.argv[1:] if a.startswith('--config.')]
    return (f'unknown config key {key!r} in {" ".join(overrides) or "the config"}; the config is '
            'locked: override only keys it defines (see the config file)')
  return ' '.join(str(e).split()) or type(e).__name__


def _parse_flags(argv):
  """absl's flag parsing, with every bad flag or config override reported as one line, exit 2."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  # flags.Error, config_flags' errors
    print(f'error: {_flag_error_line(e)}', file=sys.stderr, flush=True)
    sys.exit(2)


def run():
  """Console entry point (`w2s` and `python -m w2s.main`)."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
