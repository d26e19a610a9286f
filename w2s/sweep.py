"""Sweeps: one config, many runs. `python -m w2s.sweep --config configs/<exp>.py[:arg] --workdir DIR`.

A config file that defines `get_sweep(arg)` describes a sweep: a list of points, each a dict of
dotted config keys -> values applied over `get_config(arg)` (big_vision / ml_collections style),
built with `product` and `zipped`:

    def get_sweep(arg=None):
      return sweep.product(sweep.axis('splits.max_weak', [250, 1000]),
                           sweep.axis('strong.model.layers', [2, 6]))

Each point runs in `DIR/<name>` (a readable name such as `max_weak-250_layers-2`) and writes its
`results.json` there. Weak-to-strong points share one stage directory, `DIR/stages`, through the
config's `shared_dir` (frozen features live in the user feature cache, `W2S_CACHE_DIR`, or in
`DIR/features` when that is set empty): a stage is keyed by exactly
what produces it, so a weak supervisor that several points use trains once, and a sweep killed
midway and rerun finishes only what is missing (finished points are skipped, finished stages
reused, an interrupted stage resumes from its checkpoints). Locks make concurrent points that
need the same stage wait for it rather than train it twice.

    --print           one command per point (ready for a SLURM array or a TPU-VM loop); run one
                      point with --only=NAME or --index=K
    --dry_run         each point checked and printed as it goes, with which stages are done
    --workers N       N points at a time, each in its own process; with --gpus 0,1,.. worker i
                      sees only GPU i (one point per device, like EleutherAI's GPU pool)
    --config.key=V    an override, as `python -m w2s.main` takes it, applied to every point before
                      the point's own values (w2s/config_overrides.py); recorded in sweep.json, so
                      a rerun in DIR with other overrides is refused (its finished points and
                      shared stages were made under the first ones): use a new --workdir

Nothing is written to DIR before every point passed the check `python -m w2s.main --dry_run`
runs (keys the config defines, values, plug-ins) and every results.json already there was read
back under its point's config, so a bad sweep leaves a finished one (and its sweep.json, the index
`w2s.report` reads) as it was. SIGTERM / Ctrl-C stops the sweep at a safe point, workers included
(exit 143); rerunning the same command finishes what is missing.
"""
import argparse
import importlib.util
import itertools
import json
import os
import re
import sys
import traceback
from typing import Any, Iterable

from w2s import config_overrides
from w2s.errors import UserError

Point = dict[str, Any]


def axis(key: str, values: Iterable) -> list[Point]:
  """One swept key: [{key: v} for v in values]."""
  return [{key: v} for v in values]


def product(*axes: list[Point]) -> list[Point]:
  """Every combination of the axes' points (the first axis varies slowest)."""
  return [{k: v for p in combo for k, v in p.items()} for combo in itertools.product(*axes)]


def zipped(*axes: list[Point]) -> list[Point]:
  """The axes' points side by side (all axes the same length)."""
  if len({len(a) for a in axes}) > 1:
    raise UserError(f'sweep.zipped needs axes of one length, got {[len(a) for a in axes]}')
  return [{k: v for p in combo for k, v in p.items()} for combo in zip(*axes)]


def point_name(point: Point) -> str:
  """'max_weak-250_layers-2': the last part of each key and its value, filesystem-safe."""
  parts = [f'{k.rsplit(".", 1)[-1]}-{_short(v)}' for k, v in point.items()]
  return re.sub(r'[^A-Za-z0-9_.=-]+', '', '_'.join(parts)) or 'base'


def _short(v) -> str:
  if isinstance(v, dict):
    return str(v.get('name', '_'.join(f'{k}{_short(x)}' for k, x in v.items())))
  if isinstance(v, (list, tuple)):
    return '+'.join(_short(x) for x in v)
  return str(v)


def load(spec: str):
  """(config module, arg) of 'path/to/config.py[:arg]'; a file that fails to import is one
  UserError line naming it."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise UserError(f'--config {path} is not a file')
  mod_spec = importlib.util.spec_from_file_location(
      'w2s_sweep_config_' + re.sub(r'\W', '_', os.path.basename(path)), path)
  module = importlib.util.module_from_spec(mod_spec)
  try:
    mod_spec.loader.exec_module(module)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # the config is user code
    raise UserError(f'cannot load --config {path}: {_described(e, path)}') from e
  return module, (arg or None)


def _described(e: BaseException, path: str) -> str:
  """'KeyError: 'x' (line 57)': the exception in one line, at its last line in `path`."""
  text = ' '.join(str(e).split())
  lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
           if os.path.abspath(f.filename) == os.path.abspath(path)]
  line = lines[-1] if lines else getattr(e, 'lineno', None)
  return f'{type(e).__name__}{": " + text if text else ""}' + (f' (line {line})' if line else '')


def _call(module, fn: str, arg):
  """module.<fn>(arg): an exception in the config file's own code (a typo, a bad preset) becomes
  one UserError line naming the file, the call and the exception."""
  try:
    return getattr(module, fn)(arg)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # the config is user code
    raise UserError(f'{module.__file__}: {fn}({arg!r}) raised {_described(e, module.__file__)}; '
                    'fix the config file') from e


def points_of(module, arg) -> list[tuple[str, Point]]:
  """The sweep's (name, overrides) list; UserError if the config defines no sweep, get_sweep
  fails or returns something other than {dotted key: value} points, or two points share a name."""
  if not hasattr(module, 'get_sweep'):
    raise UserError(f'{module.__file__} defines no get_sweep(arg); a sweep config returns a list '
                    'of {dotted key: value} points (see w2s/sweep.py)')
  points = _call(module, 'get_sweep', arg)
  if not isinstance(points, (list, tuple)):
    raise UserError(f'{module.__file__}: get_sweep({arg!r}) returned {type(points).__name__}, '
                    'not a list of {dotted key: value} points')
  if not points:
    raise UserError(f'{module.__file__}: get_sweep({arg!r}) returned no points')
  for p in points:
    if not isinstance(p, dict) or not all(isinstance(k, str) and k for k in p):
      raise UserError(f'{module.__file__}: get_sweep({arg!r}) returned the point {p!r}; each '
                      'point is a {dotted key: value} dict (build them with sweep.axis)')
  named = [(point_name(p), p) for p in points]
  names = [n for n, _ in named]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise UserError(f'sweep points {dup[0]!r} repeat; every point must differ')
  return named


def configure(module, arg, point: Point, shared_dir: str, overrides: Point | None = None):
  """The point's config: get_config(arg) with the command's `overrides` (parsed --config.key=value)
  then the point's values, stages shared under shared_dir. A key the config does not define is a
  UserError, except in a point an option of a plug-in section (`dict(name=..., **hparams)`), which
  the protocol's check holds to what the plug-in takes."""
  config = _call(module, 'get_config', arg)
  with config.unlocked():
    for key, value in (overrides or {}).items():
      config_overrides.set_key(config, key, value, plugin_options=False)
    for key, value in point.items():
      config_overrides.set_key(config, key, value)
    if 'shared_dir' in config:  # protocols with stages shared across runs
      config.shared_dir = shared_dir
  return config


def _protocol_check(config):
  """What `python -m w2s.main --dry_run` runs (`options.check_protocol`); its result."""
  from w2s import options
  return options.check_protocol(config)[1]


def check_point(module, arg, name: str, point: Point, workdir: str,
                overrides: Point | None = None) -> dict:
  """{config, done, checked}: the point's config, whether its results.json is there (read back
  under this config), and the protocol check's result (points not done). Writes nothing; a bad
  point is a UserError naming it."""
  try:
    config = configure(module, arg, point, workdir, overrides)
    done = _finished(os.path.join(workdir, name, 'results.json'), config)
    return dict(config=config, done=done, checked=None if done else _protocol_check(config))
  except UserError as e:
    raise UserError(f'sweep point {name}: {e}') from e


def _finished(path: str, config) -> bool:
  """Whether `path` holds this config's results (False: not there). A damaged file or one written
  under another config is a UserError: never overwritten, never reported as this point's."""
  if not os.path.exists(path):
    return False
  from w2s import options
  fix = 'restore it, or delete it and rerun the sweep to recompute that point'
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:  # truncated, emptied, unreadable
    raise UserError(f'{path} is damaged ({" ".join(str(e).split()) or type(e).__name__}); '
                    f'{fix}') from e
  prov = saved.get('provenance') if isinstance(saved, dict) else None
  saved = prov.get('config') if isinstance(prov, dict) else None
  if not isinstance(saved, dict):
    raise UserError(f'{path} has no provenance.config (not a finished w2s run\'s results); {fix}')
  if json.loads(json.dumps(saved, default=str)) != json.loads(
      json.dumps(options.plain(config), default=str)):
    raise UserError(f'{path} was written under a different config; move {os.path.dirname(path)} '
                    'away or use a new --workdir')
  return True


def run_point(name: str, point: Point, config, workdir: str) -> str:
  """Runs one checked point unless its results.json exists; 'done' / 'ran'. A results.json
  written under a different config is refused (one line), never overwritten."""
  from w2s import train
  point_dir = os.path.join(workdir, name)
  if _finished(os.path.join(point_dir, 'results.json'), config):  # maybe by another process
    print(f'[sweep] {name}: done earlier, skipped', flush=True)
    return 'done'
  print(f'[sweep] {name}: {json.dumps(point, default=str)}', flush=True)
  train.train_and_evaluate(config, point_dir)
  return 'ran'


def status(workdir: str, checked: dict) -> str:
  """'done', or 'k/n stages done' for a weak-to-strong point, or 'to run'."""
  if checked['done']:
    return 'done'
  if checked['config'].get('protocol', {}).get('name') != 'weak_to_strong':
    return 'to run'
  from w2s.protocols import weak_to_strong
  opts, _ = checked['checked']
  stages = []
  for seed in opts.seeds:
    stages += weak_to_strong.all_stages(weak_to_strong.stage_plan(opts, workdir, seed))
  return f'{sum(s.done() for s in stages)}/{len(stages)} stages done'


def _command(spec: str, workdir: str, name: str, flags=()) -> str:
  import shlex
  return ' '.join(shlex.quote(x) for x in (sys.executable, '-m', 'w2s.sweep', f'--config={spec}',
                                           f'--workdir={workdir}', f'--only={name}', *flags))


def parse_overrides(flags: list[str], module, arg, points) -> Point:
  """The command's --config.key=value overrides, parsed against get_config(arg) as w2s.main
  parses them; one that every point sets again (itself or a section above it) changes nothing
  and is refused."""
  if not flags:
    return {}
  overrides = config_overrides.parse_flags(flags, _call(module, 'get_config', arg))
  for key in overrides:
    if all(any(key == k or key.startswith(k + '.') for k in p) for _, p in points):
      raise UserError(f'--config.{key} changes nothing: every point of the sweep sets {key} '
                      'after the overrides; drop it, or sweep it in get_sweep')
  return overrides


def _same_overrides(workdir: str, overrides: Point) -> None:
  """A sweep directory keeps the overrides it was run with (sweep.json): its finished points
  and shared stages were made under them, so other overrides are one UserError line."""
  try:
    with open(os.path.join(workdir, 'sweep.json')) as f:
      saved = json.load(f).get('config_overrides', {})
  except (OSError, ValueError, AttributeError):
    return  # none yet, or unreadable (rewritten once every point passed its check)
  text = lambda o: ' '.join(f'--config.{k}={json.dumps(v)}' for k, v in o.items()) or 'none'
  if saved != _plain(overrides):
    raise UserError(f'{workdir} is a sweep run with the overrides {text(saved)}, not '
                    f'{text(_plain(overrides))}; rerun it with the same ones, or give this sweep '
                    'a new --workdir')


def _plain(overrides: Point) -> Point:
  from w2s.plain_data import plain
  return json.loads(json.dumps(plain(overrides), default=str))


def _index(spec: str, points: list[tuple[str, Point]], overrides: Point) -> dict:
  """sweep.json: the config, the command's overrides (if any), the swept keys and every point
  (what w2s.report reads)."""
  path, sep, arg_text = spec.partition(':')
  return {'config': os.path.abspath(path) + sep + arg_text,
          **({'config_overrides': _plain(overrides)} if overrides else {}),
          'axes': list(dict.fromkeys(k for _, p in points for k in p)),
          'points': [{'name': n, 'overrides': p} for n, p in points]}


def _index_changes(path: str, index: dict) -> bool:
  try:
    with open(path) as f:
      return json.load(f) != json.loads(json.dumps(index, default=str))
  except (OSError, ValueError):
    return True  # none yet, or unreadable: a new index is written


def _select(points, only: str, index) -> list[tuple[str, Point]]:
  """The points --only / --index name (all without them)."""
  names = [n for n, _ in points]
  if only:
    unknown = sorted(set(only.split(',')) - set(names))
    if unknown:
      raise UserError(f'--only {unknown[0]!r} is not a point of this sweep; points: '
                      f'{", ".join(names)}')
    points = [(n, p) for n, p in points if n in only.split(',')]
  if index is not None:
    if not 0 <= index < len(points):
      raise UserError(f'--index={index} is outside the sweep\'s {len(points)} points '
                      f'(0..{len(points) - 1})')
    points = [points[index]]
  return points


def _run(a, module, arg, everything, points, workdir: str) -> None:
  """Checks, then writes the index and runs. Every point to run is checked first, and every point
  of the sweep when sweep.json would change, so a bad sweep writes nothing."""
  from w2s import preemption, train
  index = _index(a.config, everything, a.overrides)
  index_path = os.path.join(workdir, 'sweep.json')
  rewrite = _index_changes(index_path, index)
  to_check = everything if rewrite else points
  print(f'[sweep] checking {len(to_check)} point(s) before writing to {workdir}', flush=True)
  checked = {n: check_point(module, arg, n, p, workdir, a.overrides) for n, p in to_check}
  preemption.check('sweep (points checked)', 'nothing was written')
  os.makedirs(workdir, exist_ok=True)
  if rewrite:
    train.write_json_atomic(index_path, index)
  if a.workers > 1:
    from w2s import sweep_workers
    sweep_workers.run_workers(a.config, workdir, [n for n, _ in points], a.workers,
                              [g for g in a.gpus.split(',') if g], a.flags)
    return
  for name, point in points:
    preemption.check(f'sweep before point {name}', 'the points before it are saved')
    run_point(name, point, checked[name]['config'], workdir)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m w2s.sweep', description=__doc__.split('\n')[0])
  ap.add_argument('--config', required=True, help='config file[:arg] defining get_sweep')
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--print', dest='print_cmds', action='store_true',
                  help='print one command per point and exit')
  ap.add_argument('--dry_run', action='store_true',
                  help='check each point and print it with its done stages; write nothing')
  ap.add_argument('--only', default='', help='comma-separated point names to run')
  ap.add_argument('--index', type=int, default=None, help='run only the K-th point (0-based)')
  ap.add_argument('--workers', type=int, default=1, help='points at a time, one process each')
  ap.add_argument('--gpus', default='', help='comma-separated GPU ids, one per worker')
  a, a.flags = ap.parse_known_args(argv)  # the rest: --config.key=value overrides
  from w2s import preemption
  preemption.install()  # SIGTERM / Ctrl-C: stop at the next safe point, exit 143
  try:
    module, arg = load(a.config)
    everything = points_of(module, arg)
    a.overrides = parse_overrides(a.flags, module, arg, everything)
    points = _select(everything, a.only, a.index)
    workdir = os.path.abspath(a.workdir)
    if not a.print_cmds:
      _same_overrides(workdir, a.overrides)
    if a.print_cmds:
      for name, _ in points:
        print(_command(a.config, workdir, name, a.flags))
    elif a.dry_run:
      for name, point in points:
        state = status(workdir, check_point(module, arg, name, point, workdir, a.overrides))
        print(f'{name}  {json.dumps(point, default=str)}  {state}', flush=True)
    else:
      from w2s import compile_cache
      compile_cache.enable()  # in-process points (--workers 1) reuse executables, as w2s.main
      _run(a, module, arg, everything, points, workdir)
    return 0
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 2
  except preemption.Preempted as e:
    print(f'preempted: {e}', file=sys.stderr, flush=True)
    return 143


if __name__ == '__main__':
  sys.exit(main())
