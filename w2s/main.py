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
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Check the config (every section and plug-in) and '
                             'print it resolved; train nothing.')
_LIST = flags.DEFINE_bool('list', False, 'Print every plug-in (losses, models, datasets, '
                          'protocols, views) and exit.')

_HELP_FLAGS = ('help', 'helpshort', 'helpfull', 'helpxml', '?')
PREEMPTED_EXIT = 143  # 128 + SIGTERM: schedulers treat it as "requeue me"


def main(argv):
  del argv
  from absl import logging
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from w2s import preemption
  preemption.install()  # SIGTERM / Ctrl-C: stop at the next safe point, exit 143
  from w2s.errors import UserError
  try:
    if _LIST.value:
      print(_plugin_list())
      return
    for name, flag in (('config', _CONFIG), ('workdir', _WORKDIR)):
      if flag.value is None and not (name == 'workdir' and _DRY_RUN.value):
        raise UserError(f'--{name} is required (python -m w2s.main --config configs/<exp>.py '
                        '--workdir DIR; --help lists the flags, --list the plug-ins)')
    config = _load_config()
    if _DRY_RUN.value:
      print(_dry_run(config))
      return
    from w2s import compile_cache, sharding, train
    compile_cache.enable()  # before the first compile: reruns, stages and seeds reuse executables
    if _DISTRIBUTED.value:
      sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                      _LOCAL_DEVICES.value)
    train.train_and_evaluate(config, _WORKDIR.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.exit(2)
  except preemption.Preempted as e:
    print(f'preempted: {e}', file=sys.stderr, flush=True)
    sys.exit(PREEMPTED_EXIT)
  except Exception as e:  # pylint: disable=broad-except  # ENOSPC, also wrapped by orbax/tensorstore
    from w2s.errors import disk_full
    if not disk_full(e):
      raise
    print(f'error: disk full writing {getattr(e, "filename", None) or "the workdir"} (No space left '
          'on device); free space and rerun the same command (finished stages and checkpoints '
          'are kept)', file=sys.stderr, flush=True)
    sys.exit(2)


def _plugin_list() -> str:
  from w2s import registry
  lines = []
  for kind in registry.ENTRY_POINTS:
    lines.append(f'{kind}: {", ".join(registry.known(kind))}')
  lines.append('(or a dotted path "pkg.module:function" for your own)')
  return '\n'.join(lines)


def _dry_run(config) -> str:
  """The config resolved and checked by its protocol (nothing trained, nothing written)."""
  from w2s import options
  from w2s.plain_data import plain
  proto, _ = options.check_protocol(config)
  import yaml
  # plain dicts and lists: ConfigDict.to_yaml() dumps the object's internals (_fields, _locked)
  text = yaml.safe_dump(plain(config), default_flow_style=False, sort_keys=True)
  return f'# config checked by protocol {proto.name!r}; nothing was trained\n{text}'


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
  except SystemExit as e:  # absl prints --help / --helpshort / --helpfull, then exits 1
    if e.code == 1 and any(a.split('=')[0].lstrip('-') in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise
  except Exception as e:  # pylint: disable=broad-except  # flags.Error, config_flags' errors
    print(f'error: {_flag_error_line(e)}', file=sys.stderr, flush=True)
    sys.exit(2)


def run():
  """Console entry point (`w2s` and `python -m w2s.main`)."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
