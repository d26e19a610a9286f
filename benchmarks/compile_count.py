"""XLA compilations per stage and epoch of a weak-to-strong job, persistent cache cold and warm.

    python benchmarks/compile_count.py                     # the README's main job, 5 seeds
    python benchmarks/compile_count.py --runlocal --seeds 1          # about a minute on 2 cores
    python benchmarks/compile_count.py --config configs/w2s_offline.py:losses=xent --seeds 2

Each mode runs the job (`w2s.train.train_and_evaluate`, what `python -m w2s.main` calls) in a
fresh process with a fresh workdir, so features are extracted and every stage trains:
`cold` with an empty temporary compilation cache (w2s/compile_cache.py), `warm` with the cache
the cold run filled (`--cache_dir` keeps it). Compilations are counted with JAX's own hooks:
the `jax.monitoring` duration event '/jax/core/compile/backend_compile_duration' (one per XLA
compile or persistent-cache read, with its function name and seconds), the event
'/jax/compilation_cache/cache_hits' (the read was a hit, nothing compiled) and the
'Compiling <fn> with global shapes and types' record of JAX's pxla logger (what
`jax_log_compiles` prints). Each compile is attributed to the stage (weak, ceiling, students,
per seed), the epoch and what it is (train step / eval on val / predict labels / feature
extraction / init / other, with the batch shapes) by wrapping `weak_to_strong.train_and_predict`,
`train.fit`, `train.run_loop`, `train.predict` and `features.extract`, and by recording the batch
each jitted step was traced on. The goal (issue 13): one compile per stage and length bucket, none
after a stage's first epoch. Printed: per stage, one line per (epoch, kind); then each mode's
totals, and the load average at the start and end (LOADED when it exceeds the cores).

Issue 22's measure is the compile share of a cold job: the seconds of every compile and cache
read over the job's wall seconds, and, less sensitive to a loaded machine, the process CPU
seconds spent in them (from the end of each lowering to the end of its backend compile, all
threads) over the job's CPU seconds (`time.process_time`).
"""
import argparse
import collections
import contextlib
import functools
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODES = ('cold', 'warm')
KINDS = ('train step', 'eval', 'eval loss', 'predict', 'features', 'init', 'other')
SHAPED = ('train step', 'eval', 'predict', 'features')  # kinds reported with their batch shapes


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--config', default='configs/w2s_offline.py',
                  help='config file[:arg] of a weak_to_strong job (default: the README main job)')
  ap.add_argument('--runlocal', action='store_true', help="add 'runlocal' to the config argument")
  ap.add_argument('--seeds', type=int, default=0, help="add 'seeds=N' to the config argument")
  ap.add_argument('--modes', default='cold,warm', help='comma-separated: cold, warm')
  ap.add_argument('--cache_dir', default='', help='compilation cache (default: a temporary one, '
                  'emptied first; warm reuses what cold wrote)')
  ap.add_argument('--features_dir', default='', help='a frozen-feature cache every mode reads and '
                  'fills (default: each mode extracts into its own fresh workdir)')
  ap.add_argument('--json', default='', help='also write the records and totals here')
  ap.add_argument('--quiet', action='store_true', help="hide the job's own output")
  ap.add_argument('--child', default='', help=argparse.SUPPRESS)  # internal: JSON out path
  ap.add_argument('--workdir', default='', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  bad = sorted(set(args.modes.split(',')) - set(MODES))
  if bad:
    ap.error(f'--modes: unknown {bad[0]!r}; use {", ".join(MODES)}')
  return args


def config_spec(args) -> str:
  path, _, arg = args.config.partition(':')
  extra = [a for a in arg.split(',') if a]
  if args.runlocal and 'runlocal' not in extra:
    extra.append('runlocal')
  if args.seeds:
    extra = [a for a in extra if not a.startswith('seeds=')] + [f'seeds={args.seeds}']
  return path + (':' + ','.join(extra) if extra else '')


def load_config(spec: str):
  path, _, arg = spec.partition(':')
  mod_spec = importlib.util.spec_from_file_location('bench_config', os.path.join(ROOT, path)
                                                    if not os.path.isabs(path) else path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


# ---------------------------------------------------------------------------------------------
# The child: runs the job once and records every compile.

class Recorder:
  """Where the job is (stage, epoch, phase) and the compiles JAX reports there."""

  def __init__(self):
    self.records, self.stages = [], []
    self.stage, self.seed, self.epoch, self.phase = 'setup', None, 'setup', None
    self.spe = None        # steps per epoch of the stage training now
    self.shapes = None     # the batch the next compile was traced on
    self.pending = {}      # what JAX logged about the compile under way
    self.lock = threading.Lock()

  @contextlib.contextmanager
  def at(self, **kw):
    old = {k: getattr(self, k) for k in kw}
    for k, v in kw.items():
      setattr(self, k, v)
    try:
      yield
    finally:
      for k, v in old.items():
        setattr(self, k, v)

  def traced(self, fn, field: str):
    """`fn` recording the shapes of its `field` argument (the batch) when traced."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
      batch = kw.get(field, a[1] if len(a) > 1 else None)
      if isinstance(batch, dict):
        self.shapes = shapes_of(batch)
      return fn(*a, **kw)
    return wrapper

  def on_log(self, msg: str):
    m = re.match(r'Compiling (\S+) with global shapes', msg)
    if m:
      with self.lock:
        self.pending = {'module': m.group(1)}

  def on_event(self, event: str, **kw):
    if event == '/jax/compilation_cache/cache_hits':
      with self.lock:
        self.pending['hit'] = True

  def on_duration(self, event: str, secs: float, **kw):
    if event == '/jax/core/compile/jaxpr_to_mlir_module_duration':
      with self.lock:  # the backend compile (or cache read) starts now
        self.pending['lower_s'] = self.pending.get('lower_s', 0.0) + float(secs)
        self.pending['cpu0'] = time.process_time()
    if event != '/jax/core/compile/backend_compile_duration':
      return
    cpu1 = time.process_time()
    with self.lock:
      pending, self.pending = self.pending, {}
      # process CPU seconds of the backend compile (all threads; less sensitive to load than
      # its wall seconds `secs`); None when the lowering event was not seen
      cpu = cpu1 - pending['cpu0'] if 'cpu0' in pending else None
      fun = re.sub(r'^jit\((.*)\)$', r'\1', str(kw.get('fun_name', pending.get('module', '?'))))
      kind = kind_of(fun, self.phase)
      shapes = self.shapes if kind in SHAPED else None
      self.shapes = None
      self.records.append(dict(stage=self.stage, seed=self.seed, epoch=self.epoch, kind=kind,
                               fun=fun, shapes=shapes, secs=float(secs),
                               hit=bool(pending.get('hit')), cpu_s=cpu,
                               lower_s=pending.get('lower_s', 0.0)))


def shapes_of(batch: dict) -> str:
  keys = [k for k in ('input_ids', 'x', 'image') if k in batch] or sorted(batch)[:1]
  return ' '.join(f'{k}{list(batch[k].shape)}' for k in keys)


def kind_of(fun: str, phase: str | None) -> str:
  if fun == 'train_step':
    return 'train step'
  if fun == 'eval_step':
    return 'eval' if phase == 'eval' else 'predict'
  if fun == 'score':
    return 'eval loss'
  if fun == 'init_fn':
    return 'init'
  if phase == 'features' and fun == '<lambda>':
    return 'features'
  return 'other'


def install(rec: Recorder) -> None:
  """JAX's hooks plus wrappers of the w2s functions that mark stages, epochs and phases."""
  from jax import monitoring
  from w2s import train
  from w2s.data import pipeline
  from w2s.models import features
  from w2s.protocols import weak_to_strong

  monitoring.register_event_duration_secs_listener(rec.on_duration)
  monitoring.register_event_listener(rec.on_event)

  class Handler(logging.Handler):
    def emit(self, record):
      rec.on_log(record.getMessage())
  log = logging.getLogger('jax._src.interpreters.pxla')
  log.setLevel(logging.DEBUG)  # the 'Compiling ...' record is DEBUG without jax_log_compiles
  log.propagate = False
  log.addHandler(Handler())

  from w2s import predict
  train.train_step = rec.traced(train.train_step, 'batch')
  train.eval_step = rec.traced(train.eval_step, 'batch')
  predict.eval_step = rec.traced(predict.eval_step, 'batch')  # the one predict's jits call
  batches = features._batches  # pylint: disable=protected-access

  def feature_batches(*a, **kw):
    for rows, batch in batches(*a, **kw):
      rec.shapes = shapes_of(batch)
      yield rows, batch
  features._batches = feature_batches  # pylint: disable=protected-access

  def wrap(module, name, make):
    setattr(module, name, make(getattr(module, name)))

  def stage_fn(fn):
    def run(stage, *a, **kw):
      seed = re.search(r'-seed(\d+)-', os.path.basename(stage.dir))
      with rec.at(stage=stage.kind, seed=int(seed.group(1)) if seed else None, epoch='setup'):
        rec.stages.append([stage.kind, rec.seed, None])
        return fn(stage, *a, **kw)
    return run

  def fit_fn(fn):
    def fit(module, train_examples, **kw):
      opts = train.options.TrainOptions.coerce(kw['cfg'])
      spe = pipeline.steps_per_epoch(pipeline.num_rows(train_examples), opts.batch_size)
      rec.stages[-1][2] = spe
      with rec.at(phase='init', spe=spe):
        out = fn(module, train_examples, **kw)
      rec.epoch = 'labels'  # what runs after fit in this stage: its predictions
      return out
    return fit

  def run_loop_fn(fn):
    def run_loop(state, batches, *, step_fn, evaluator=None, **kw):
      step = [int(jax_step(state))]

      def counted(state, batch):
        step[0] += 1
        rec.epoch = (step[0] - 1) // rec.spe + 1
        with rec.at(phase='train'):
          return step_fn(state, batch)

      def evaluate(params):
        with rec.at(phase='eval'):
          return evaluator(params)
      out = fn(state, batches, step_fn=counted,
               evaluator=None if evaluator is None else evaluate, **kw)
      rec.epoch = 'end'  # fit's evaluation of the selected parameters
      return out
    return run_loop

  def predict_fn(fn):
    def predict(*a, **kw):  # the evaluator's: '<stage> val'; labels: '<stage> labels <split>'
      name = str(kw.get('name', ''))
      held_out = name.endswith(' val') and ' labels ' not in name
      with rec.at(phase='eval' if held_out else 'predict'):
        return fn(*a, **kw)
    return predict

  def extract_fn(fn):
    def extract(*a, **kw):
      with rec.at(phase='features'):
        return fn(*a, **kw)
    return extract

  wrap(weak_to_strong, 'train_and_predict', stage_fn)
  wrap(train, 'fit', fit_fn)
  wrap(train, 'run_loop', run_loop_fn)
  wrap(train, 'predict', predict_fn)
  wrap(features, 'extract', extract_fn)


def jax_step(state):
  import numpy as np
  return np.asarray(state.step).ravel()[0]


def child(args) -> None:
  from w2s import compile_cache, train
  path = compile_cache.enable(os.environ.get('JAX_COMPILATION_CACHE_DIR'))
  rec = Recorder()
  install(rec)
  config = load_config(config_spec(args))
  t0, c0 = time.perf_counter(), time.process_time()
  train.train_and_evaluate(config, args.workdir)
  out = dict(records=rec.records, stages=rec.stages, wall_s=time.perf_counter() - t0,
             cpu_s=time.process_time() - c0, cache_dir=path)
  with open(args.child, 'w') as f:
    json.dump(out, f)


# ---------------------------------------------------------------------------------------------
# The parent: one child per mode, then the tables.

def run_mode(args, mode: str, cache_dir: str, tmp: str) -> dict:
  out, workdir = os.path.join(tmp, f'{mode}.json'), os.path.join(tmp, f'work_{mode}')
  cmd = [sys.executable, os.path.abspath(__file__), '--child', out, '--workdir', workdir,
         '--config', config_spec(args)]
  # the feature cache: --features_dir, else the fresh workdir's own (W2S_CACHE_DIR empty), not
  # the user cache, whose features would leave nothing to extract (or compile) here
  env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': cache_dir,
         'W2S_CACHE_DIR': os.path.abspath(args.features_dir) if args.features_dir else ''}
  env.pop('W2S_COMPILATION_CACHE', None)
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, env=env, cwd=ROOT, text=True,
                        stdout=subprocess.PIPE if args.quiet else None,
                        stderr=subprocess.STDOUT if args.quiet else None)
  if proc.returncode:
    tail = (proc.stdout or '')[-3000:]
    raise RuntimeError(f'{mode} run failed (exit {proc.returncode}): {" ".join(cmd)}\n{tail}')
  with open(out) as f:
    res = json.load(f)
  res['process_s'] = time.perf_counter() - t0
  return res


def summarize(res: dict) -> dict:
  """Totals of one mode: compiles by kind, XLA seconds, cache hits, compiles after epoch 1."""
  recs = res['records']
  compiled = [r for r in recs if not r['hit']]
  by_kind = collections.Counter(r['kind'] for r in compiled)
  # a persistent-cache read counts as a compile request too: it means a retrace and a lowering,
  # only the XLA compile was saved
  late = lambda kinds: sum(1 for r in recs if r['kind'] in kinds
                           and isinstance(r['epoch'], int) and r['epoch'] > 1)
  seen, repeats = set(), collections.Counter()
  for r in recs:  # the same function on the same shapes again within a stage: a recompile
    key = (r['stage'], r['seed'], r['kind'], r['fun'], r['shapes'])
    if key in seen and r['kind'] in SHAPED:
      repeats[r['kind']] += 1
    seen.add(key)
  cpu = lambda rs: sum(r.get('cpu_s') or 0.0 for r in rs)
  return dict(compiles=len(compiled), hits=len(recs) - len(compiled),
              compile_s=sum(r['secs'] for r in compiled),
              compile_cpu_s=cpu(compiled), hit_cpu_s=cpu(r for r in recs if r['hit']),
              hit_s=sum(r['secs'] for r in recs if r['hit']),
              lower_s=sum(r['lower_s'] for r in recs),
              by_kind={k: by_kind.get(k, 0) for k in KINDS},
              requests_by_kind=dict(collections.Counter(r['kind'] for r in recs)),
              train_after_epoch1=late({'train step'}),
              eval_after_epoch1=late({'eval', 'eval loss', 'predict'}),
              repeats={k: repeats.get(k, 0) for k in SHAPED},
              wall_s=res['wall_s'], process_s=res['process_s'], cpu_s=res.get('cpu_s'),
              share=sum(r['secs'] for r in recs) / max(res['wall_s'], 1e-9),
              cpu_share=(cpu(recs) / res['cpu_s'] if res.get('cpu_s') else None))


def per_stage_lines(res: dict) -> list[str]:
  groups = collections.OrderedDict()
  for r in res['records']:
    key = (r['stage'], r['seed'], str(r['epoch']), r['kind'])
    groups.setdefault(key, []).append(r)
  lines = [f'  {"stage":<18} {"seed":>4} {"epoch":>6}  {"kind":<10} {"n":>3} {"hit":>3} '
           f'{"xla s":>6} {"cpu s":>6}  shapes / functions']
  for (stage, seed, epoch, kind), rs in groups.items():
    hits = sum(r['hit'] for r in rs)
    secs = sum(r['secs'] for r in rs)
    cpu = sum(r.get('cpu_s') or 0.0 for r in rs)
    what = collections.Counter(r['shapes'] if r['shapes'] and kind != 'other' else r['fun']
                               for r in rs)
    desc = ', '.join(f'{w} x{c}' if c > 1 else w for w, c in what.most_common(6))
    more = len(what) - 6
    lines.append(f'  {stage:<18} {"" if seed is None else seed:>4} {epoch:>6}  {kind:<10} '
                 f'{len(rs):>3} {hits:>3} {secs:>6.2f} {cpu:>6.2f}  {desc}' + (f' (+{more} more)' if more > 0
                                                                  else ''))
  return lines


def total_line(mode: str, s: dict) -> str:
  kinds = ', '.join(f'{k} {n}' for k, n in s['by_kind'].items() if n)
  rep = ', '.join(f'{k} {n}' for k, n in s['repeats'].items() if n) or 'none'
  return (f'{mode}: {s["compiles"]} compiles ({kinds}) {s["compile_s"]:.1f} s of XLA; '
          f'{s["hits"]} persistent-cache reads {s["hit_s"]:.1f} s; lowering {s["lower_s"]:.1f} s; '
          f'compiles + reads after a stage\'s epoch 1: train step {s["train_after_epoch1"]}, '
          f'eval/predict {s["eval_after_epoch1"]}; recompiles of a shape within a stage: {rep}; '
          f'job {s["wall_s"]:.1f} s (process {s["process_s"]:.1f} s); compile share (compiles + '
          f'reads): {100 * s["share"]:.1f}% of wall, '
          + (f'{s["compile_cpu_s"] + s["hit_cpu_s"]:.1f} of {s["cpu_s"]:.1f} CPU s = '
             f'{100 * s["cpu_share"]:.1f}% of CPU' if s['cpu_share'] is not None else 'CPU n/a'))


def main(argv=None) -> dict:
  """Runs the modes; {'<mode>': {'records', 'stages', 'totals', ...}, '_': load, settings}."""
  args = parse(argv)
  if args.child:
    child(args)
    return {}
  load0 = os.getloadavg()
  cores = os.cpu_count() or 1
  spec = config_spec(args)
  print(f'compile_count: {spec}, modes {args.modes}; load {load0[0]:.2f} on {cores} cores',
        flush=True)
  out = {}
  with tempfile.TemporaryDirectory(prefix='w2s-compile-count-') as tmp:
    cache_dir = args.cache_dir or os.path.join(tmp, 'jax_cache')
    os.makedirs(cache_dir, exist_ok=True)
    for mode in args.modes.split(','):
      if mode == 'cold' and os.listdir(cache_dir):
        raise SystemExit(f'--cache_dir {cache_dir} is not empty; a cold run needs an empty one')
      res = run_mode(args, mode, cache_dir, tmp)
      res['totals'] = summarize(res)
      out[mode] = res
  for mode, res in out.items():
    print(f'\n{mode} cache: compiles per stage and epoch ("setup": before training, "labels": '
          'its predictions after; hit = read from the persistent cache)')
    print('\n'.join(per_stage_lines(res)))
  print()
  for mode, res in out.items():
    print(total_line(mode, res['totals']))
  load1 = os.getloadavg()
  loaded = max(load0[0], load1[0]) > cores
  print(f'load average start {load0[0]:.2f} end {load1[0]:.2f} on {cores} cores'
        + ('  LOADED: timings are unreliable (counts are not)' if loaded else ''), flush=True)
  out['_'] = dict(config=spec, load=(load0, load1), loaded=loaded)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == '__main__':
  main()
