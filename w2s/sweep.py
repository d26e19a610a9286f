"""Sweeps: one config, many runs. `python -m w2s.sweep --config configs/<exp>.py[:arg] --workdir DIR`.

A config file that defines `get_sweep(arg)` describes a sweep: a list of points, each a dict of
dotted config keys -> values applied over `get_config(arg)` (big_vision / ml_collections style),
built with `product` and `zipped`:

    def get_sweep(arg=None):
      return sweep.product(sweep.axis('splits.max_weak', [250, 1000]),
                           sweep.axis('strong.model.layers', [2, 6]))

Each point runs in `DIR/<name>` (a readable name such as `max_weak-250_layers-2`) and writes its
`results.json` there. Weak-to-strong points share one stage directory, `DIR/stages` (and one
feature cache, `DIR/features`), through the config's `shared_dir`: a stage is keyed by exactly
what produces it, so a weak supervisor that several points use trains once, and a sweep killed
midway and rerun finishes only what is missing (finished points are skipped, finished stages
reused, an interrupted stage resumes from its checkpoints). Locks make concurrent points that
need the same stage wait for it rather than train it twice.

    --print           one command per point (ready for a SLURM array or a TPU-VM loop); run one
                      point with --only=NAME or --index=K
    --dry_run         the points and, for each, which stages are already done
    --workers N       N points at a time, each in its own process; with --gpus 0,1,.. worker i
                      sees only GPU i (one point per device, like EleutherAI's GPU pool)
"""
import argparse
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Iterable

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
  """(config module, arg) of 'path/to/config.py[:arg]'."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise UserError(f'--config {path} is not a file')
  mod_spec = importlib.util.spec_from_file_location(
      'w2s_sweep_config_' + re.sub(r'\W', '_', os.path.basename(path)), path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module, (arg or None)


def points_of(module, arg) -> list[tuple[str, Point]]:
  """The sweep's (name, overrides) list; UserError if the config defines no sweep or two points
  share a name."""
  if not hasattr(module, 'get_sweep'):
    raise UserError(f'{module.__file__} defines no get_sweep(arg); a sweep config returns a list '
                    'of {dotted key: value} points (see w2s/sweep.py)')
  points = list(module.get_sweep(arg))
  if not points:
    raise UserError('get_sweep returned no points')
  named = [(point_name(p), p) for p in points]
  names = [n for n, _ in named]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise UserError(f'sweep points {dup[0]!r} repeat; every point must differ')
  return named


def configure(module, arg, point: Point, shared_dir: str):
  """The point's config: get_config(arg) with the overrides, stages shared under shared_dir."""
  config = module.get_config(arg)
  with config.unlocked():
    for key, value in point.items():
      node = config
      parts = key.split('.')
      for p in parts[:-1]:
        if p not in node:
          raise UserError(f'sweep key {key!r}: the config has no section {p!r}')
        node = node[p]
      node[parts[-1]] = value
    if 'shared_dir' in config:  # protocols with stages shared across runs
      config.shared_dir = shared_dir
  return config


def _same_config(path: str, config) -> bool:
  from w2s import options
  with open(path) as f:
    saved = json.load(f).get('provenance', {}).get('config')
  return json.loads(json.dumps(saved, default=str)) == json.loads(
      json.dumps(options.plain(config), default=str))


def run_point(module, arg, name: str, point: Point, workdir: str) -> str:
  """Runs one point unless its results.json exists; 'done' / 'ran'. A results.json written
  under a different config is refused (one line), never overwritten."""
  from w2s import train
  config = configure(module, arg, point, workdir)
  point_dir = os.path.join(workdir, name)
  results = os.path.join(point_dir, 'results.json')
  if os.path.exists(results):
    if not _same_config(results, config):
      raise UserError(f'{results} was written under a different config; move {point_dir} away '
                      'or use a new --workdir')
    print(f'[sweep] {name}: done earlier, skipped', flush=True)
    return 'done'
  print(f'[sweep] {name}: {json.dumps(point, default=str)}', flush=True)
  train.train_and_evaluate(config, point_dir)
  return 'ran'


def status(module, arg, name: str, point: Point, workdir: str) -> str:
  """'done', or 'k/n stages done' for a weak-to-strong point, or 'to run'."""
  if os.path.exists(os.path.join(workdir, name, 'results.json')):
    return 'done'
  config = configure(module, arg, point, workdir)
  if config.get('protocol', {}).get('name') != 'weak_to_strong':
    return 'to run'
  from w2s.protocols import weak_to_strong
  opts, _ = weak_to_strong.check(config)
  stages = []
  for seed in opts.seeds:
    plan = weak_to_strong.stage_plan(opts, workdir, seed)
    stages += [plan['weak'], plan['ceiling'], *plan['chain'],
               *(s for rounds in plan['students'].values() for s in rounds)]
  return f'{sum(s.done() for s in stages)}/{len(stages)} stages done'


def _command(spec: str, workdir: str, name: str) -> str:
  return (f'{sys.executable} -m w2s.sweep --config={spec} --workdir={workdir} --only={name}')


def _run_workers(spec: str, workdir: str, names: list[str], workers: int, gpus: list[str]) -> None:
  """Each point in its own process, `workers` at a time (worker i pinned to gpus[i] if given)."""
  queue, running, failed = list(names), [], []
  while queue or running:
    while queue and len(running) < workers:
      slot = next(i for i in range(workers) if i not in [s for s, _, _ in running])
      env = dict(os.environ)
      if gpus:
        env['CUDA_VISIBLE_DEVICES'] = gpus[slot % len(gpus)]
      name = queue.pop(0)
      cmd = [sys.executable, '-m', 'w2s.sweep', f'--config={spec}', f'--workdir={workdir}',
             f'--only={name}']
      running.append((slot, name, subprocess.Popen(cmd, env=env)))
    finished = [r for r in running if r[2].poll() is not None]
    if not finished:
      time.sleep(0.2)
    for r in finished:
      running.remove(r)
      if r[2].returncode:
        failed.append(f'{r[1]} (exit {r[2].returncode})')
  if failed:
    raise UserError(f'{len(failed)} sweep point(s) failed: {", ".join(failed)}; rerun the sweep '
                    'to finish them (done points and stages are kept)')


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m w2s.sweep', description=__doc__.split('\n')[0])
  ap.add_argument('--config', required=True, help='config file[:arg] defining get_sweep')
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--print', dest='print_cmds', action='store_true',
                  help='print one command per point and exit')
  ap.add_argument('--dry_run', action='store_true', help='list points and their done stages')
  ap.add_argument('--only', default='', help='comma-separated point names to run')
  ap.add_argument('--index', type=int, default=None, help='run only the K-th point (0-based)')
  ap.add_argument('--workers', type=int, default=1, help='points at a time, one process each')
  ap.add_argument('--gpus', default='', help='comma-separated GPU ids, one per worker')
  a = ap.parse_args(argv)
  from w2s import preemption
  preemption.install()  # SIGTERM / Ctrl-C: stop at the next safe point, exit 143
  try:
    module, arg = load(a.config)
    points = points_of(module, arg)
    names = [n for n, _ in points]
    if a.only:
      unknown = sorted(set(a.only.split(',')) - set(names))
      if unknown:
        raise UserError(f'--only {unknown[0]!r} is not a point of this sweep; points: '
                        f'{", ".join(names)}')
      points = [(n, p) for n, p in points if n in a.only.split(',')]
    if a.index is not None:
      if not 0 <= a.index < len(points):
        raise UserError(f'--index={a.index} is outside the sweep\'s {len(points)} points '
                        f'(0..{len(points) - 1})')
      points = [points[a.index]]
    workdir = os.path.abspath(a.workdir)
    if a.print_cmds:
      for name, _ in points:
        print(_command(a.config, workdir, name))
      return 0
    if a.dry_run:
      for name, point in points:
        print(f'{name}  {json.dumps(point, default=str)}  '
              f'{status(module, arg, name, point, workdir)}')
      return 0
    os.makedirs(workdir, exist_ok=True)
    from w2s import train
    path, sep, arg_text = a.config.partition(':')
    train.write_json_atomic(os.path.join(workdir, 'sweep.json'), {
        'config': os.path.abspath(path) + sep + arg_text, 'axes': list(dict.fromkeys(k for _, p in points_of(module, arg)
                                                       for k in p)),
        'points': [{'name': n, 'overrides': p} for n, p in points_of(module, arg)]})
    if a.workers > 1:
      _run_workers(a.config, workdir, [n for n, _ in points], a.workers,
                   [g for g in a.gpus.split(',') if g])
      return 0
    for name, point in points:
      run_point(module, arg, name, point, workdir)
    return 0
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 2
  except preemption.Preempted as e:
    print(f'preempted: {e}', file=sys.stderr, flush=True)
    return 143


if __name__ == '__main__':
  sys.exit(main())
