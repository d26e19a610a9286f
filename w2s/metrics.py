"""Training telemetry: JSONL records, TensorBoard events and hparams, a progress line, and a
NaN/inf guard.

Only process 0 writes; every process checks the guard (the values are global, so all agree).
"""
import contextlib
import contextvars
import json
import math
import numbers
import os
import shutil
import sys
import time

import jax

from w2s.errors import UserError


class NonFiniteError(UserError):
  """A metric became NaN or inf: the run stops before the state is checkpointed."""


def check_finite(metrics: dict, step: int, every: int = 1) -> None:
  """NonFiniteError naming the step and the metric (the loss first) if any value is NaN or inf."""
  for k in sorted(metrics, key=lambda k: k != 'loss'):
    v = metrics[k]
    if isinstance(v, (int, float)) and not math.isfinite(v):
      when = f'at step {step}' + (f' (checked every {every} steps)' if every > 1 else '')
      raise NonFiniteError(f'{k} is {v} {when}; the run stopped without saving this state (lower '
                           'the learning rate, clip gradients with optimizer.clip_norm, or check '
                           'the inputs)')


def tb_tag(key: str) -> str:
  """A metrics.jsonl key's TensorBoard tag: `val_loss` -> `val/loss`, `test_x` -> `test/x`,
  `loss` -> `train/loss` (one panel group per split); a key with a '/' is kept."""
  if '/' in key:
    return key
  for split in ('val', 'test'):
    if key.startswith(split + '_'):
      return f'{split}/{key[len(split) + 1:]}'
  return f'train/{key}'


class Writer:
  """Appends one JSON record per logging step to `<logdir>/metrics.jsonl` and mirrors scalars to
  TensorBoard event files in `logdir`, grouped by `tb_tag` (`train/loss`, `val/accuracy`; the
  JSONL keys stay flat). A resumed run appends; records of steps the resumed run redoes are
  written again (readers keep the last record per step)."""

  def __init__(self, logdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.logdir = logdir
    self._tb = None
    if self.enabled:
      os.makedirs(logdir, exist_ok=True)
      self._jsonl = open(os.path.join(logdir, 'metrics.jsonl'), 'a')
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(logdir, flush_secs=10)
      except ImportError:  # tensorboard files are optional; the JSONL record is not
        self._tb = None

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(tb_tag(k), float(v), int(step))

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


_STAGE: contextvars.ContextVar = contextvars.ContextVar('w2s_stage', default=None)


@contextlib.contextmanager
def stage(position: tuple[int, int] | None):
  """Progress lines started inside say `stage k/N` (`position` = (k, N), 1-based; None says
  nothing). A protocol that plans its stages up front numbers them over every seed."""
  token = _STAGE.set(position)
  try:
    yield
  finally:
    _STAGE.reset(token)


def in_notebook() -> bool:
  """Whether this runs under a Jupyter / Colab kernel, where stderr is no terminal and each
  printed line becomes an output block of its own."""
  if 'ipykernel' not in sys.modules:
    return False
  try:
    from IPython import get_ipython
  except ImportError:
    return False
  return hasattr(get_ipython(), 'kernel')


class Progress:
  """`[name, stage 2/10] 120/400 (30%)  41.2 ex/s  elapsed 00:12  ETA 01:48  loss 0.4132` on
  stderr, process 0 only (`stage k/N` inside `metrics.stage`).

  The ETA is the steps left over a smoothed step rate: tqdm's exponential moving average
  (`smoothing`, tqdm's 0.3) of the steps and of the seconds between reports, so the first interval
  (which holds compilation) fades out over a few lines instead of the ETA falling from hours to
  minutes between two lines. The rate `update` returns (logged as examples_per_sec) is the last
  interval's, unsmoothed. Times are formatted as tqdm does (`01:48`, `1:23:50`).

  Not a tqdm bar: a bar rewrites one line with carriage returns, which a log file (nohup, SLURM,
  CI) keeps as one ever-growing line; this prints one line per report, with the loss, at the
  trainer's log steps (where it syncs with the device anyway), and only on process 0. Under a
  notebook kernel (`inline`, the default there) it rewrites one line in place instead of adding
  an output block per report. `clock` (seconds) makes the timing testable.
  """

  def __init__(self, name: str, total: int, unit: str = 'ex', start: int = 0, stream=None,
               min_interval_s: float = 0.0, *, smoothing: float = 0.3, clock=time.perf_counter,
               inline: bool | None = None):
    from tqdm.std import EMA
    self.name, self.total, self.unit = name, total, unit
    self.stream = stream or sys.stderr
    self.min_interval_s = min_interval_s
    self.inline = in_notebook() if inline is None else inline
    self.position = _STAGE.get()
    self._clock = clock
    self._t0 = self._last_t = clock()
    self._last_n = start
    self._ema_steps, self._ema_dt = EMA(smoothing), EMA(smoothing)
    self._width = 0  # of the line written in place (inline)
    self.rate = float('nan')

  def update(self, done: int, items_per_step: float = 1.0, extra: str = '') -> float:
    """Prints the line (unless within `min_interval_s` of the last one and not finished)."""
    now = self._clock()
    if now - self._last_t < self.min_interval_s and done < self.total:
      return self.rate
    dt = max(now - self._last_t, 1e-9)
    steps = done - self._last_n
    self.rate = steps * items_per_step / dt
    if steps > 0:
      self._ema_steps(steps)
      self._ema_dt(dt)
    self._last_t, self._last_n = now, done
    if jax.process_index() == 0:
      self._print(self.line(done, now, extra), done >= self.total)
    return self.rate

  def eta_s(self, done: int) -> float:
    """Seconds left at the smoothed step rate (inf before a step was timed)."""
    steps, dt = self._ema_steps(), self._ema_dt()
    return (self.total - done) * dt / steps if steps > 0 else float('inf')

  def line(self, done: int, now: float, extra: str = '') -> str:
    from tqdm.std import tqdm
    eta = self.eta_s(done)
    stage = ', stage {}/{}'.format(*self.position) if self.position else ''
    pct = 100.0 * done / max(self.total, 1)
    times = (f'elapsed {tqdm.format_interval(now - self._t0)}  '
             f'ETA {tqdm.format_interval(eta) if math.isfinite(eta) else "?"}')
    return (f'[{self.name}{stage}] {done}/{self.total} ({pct:.0f}%)  {self.rate:.1f} '
            f'{self.unit}/s  {times}  {extra}').rstrip()

  def _print(self, text: str, last: bool) -> None:
    if not self.inline:
      print(text, file=self.stream, flush=True)
      return
    pad = ' ' * max(0, self._width - len(text))  # covers the longer line before it
    self._width = 0 if last else len(text)
    self.stream.write('\r' + text + pad + ('\n' if last else ''))
    self.stream.flush()

  def close(self) -> None:
    """Ends a line left open in place (a run stopped before its last step); idempotent."""
    if self.inline and self._width:
      self.stream.write('\n')
      self.stream.flush()
      self._width = 0


HPARAMS_RUN = 'hparams'  # <workdir>/hparams: the run TensorBoard's HParams view compares
# parts of a protocol's results that are no single number of the run (its per-seed records,
# the paired loss-vs-loss differences, the config and provenance it carries)
_NOT_RESULTS = ('per_seed', 'paired', 'seeds', 'config', 'provenance', 'stages')


def write_hparams(workdir: str, results: dict) -> str | None:
  """`<workdir>/hparams/`: a TensorBoard run holding the run's config (flattened: `seed`,
  `strong.model.name`, ...) as hparams and each number of its results as a metric
  (`results/accuracy`; `results/xent/acc_student`, `results/xent/pgr` per student loss: a summary
  over seeds by its mean), so `tensorboard --logdir` over many runs (a sweep's points) compares
  them in the HParams view. A run of its own beside `stages/`: TensorBoard reads a session's
  metrics from its run and the runs below it, and the stages' curves are not the run's results.
  Replaced whole on a rerun; None without tensorboardX. The config comes from
  `results['provenance']['config']` (what results.json records)."""
  try:
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams
  except ImportError:
    return None
  config = (results.get('provenance') or {}).get('config') or {}
  scores = result_metrics(results)
  # the sessions only, no experiment summary: TensorBoard takes the first run's as everyone's,
  # and builds one from every session's hparams and metrics without it
  _, start, end = hparams(flat_hparams(config), scores)
  path = os.path.join(workdir, HPARAMS_RUN)
  tmp = f'{path}.tmp.{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  with SummaryWriter(tmp) as w:
    w.file_writer.add_summary(start)
    for tag, value in scores.items():
      w.add_scalar(tag, value, 0)
    w.file_writer.add_summary(end)
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)
  return path


def flat_hparams(config: dict, prefix: str = '') -> dict:
  """{'strong.model.name': 'bert', 'seed': 0, ...}: the config's leaves by dotted key, as the
  bool / number / string values TensorBoard compares (a list or tuple as its JSON text; None and
  empty sections left out)."""
  out = {}
  for k, v in config.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flat_hparams(v, key + '.'))
    elif isinstance(v, (bool, int, float, str)):
      out[key] = v
    elif v is not None:
      out[key] = json.dumps(v, default=str)
  return out


def result_metrics(results: dict, prefix: str = 'results') -> dict[str, float]:
  """{'results/<path>': value} of each finite number in a protocol's results: 'summary' entries
  ({mean, lo, hi, n, ...} over seeds) by their mean and without 'summary' in the path, so
  `results/xent/pgr`; lists, booleans and `_NOT_RESULTS` left out."""
  out = {}
  for k, v in results.items():
    if k in _NOT_RESULTS:
      continue
    key = prefix if k == 'summary' else f'{prefix}/{k}'
    if isinstance(v, dict) and 'mean' in v and 'n' in v:
      v = v['mean']
    if isinstance(v, dict):
      out.update(result_metrics(v, key))
    elif isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v):
      out[key] = float(v)
  return out


def read_records(logdir: str) -> list[dict]:
  """The records of `<logdir>/metrics.jsonl`, the last one per (step, keys) kept, by step."""
  path = os.path.join(logdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  merged: dict[int, dict] = {}
  with open(path) as f:
    for line in f:
      try:
        r = json.loads(line)
      except ValueError:
        continue  # a line cut by a crash
      merged.setdefault(int(r['step']), {}).update(r)
  return [merged[s] for s in sorted(merged)]

