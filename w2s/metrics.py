"""Training telemetry: JSONL records, TensorBoard events, a progress line, and a NaN/inf guard.

Only process 0 writes; every process checks the guard (the values are global, so all agree).
"""
import json
import math
import os
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


class Writer:
  """Appends one JSON record per logging step to `<logdir>/metrics.jsonl` and mirrors scalars to
  TensorBoard event files in `logdir`. A resumed run appends; records of steps the resumed run
  redoes are written again (readers keep the last record per step)."""

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
        self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


class Progress:
  """`[name] step 120/400 (30%)  41.2 ex/s  ETA 0:01:48  loss 0.4132` on stderr, process 0 only.

  Rate is measured over the interval since the last report, so compilation of the first step
  does not distort the ETA for long.
  """

  def __init__(self, name: str, total: int, unit: str = 'ex', start: int = 0, stream=None,
               min_interval_s: float = 0.0):
    self.name, self.total, self.unit = name, total, unit
    self.stream = stream or sys.stderr
    self.min_interval_s = min_interval_s
    self._last_t, self._last_n = time.perf_counter(), start
    self.rate = float('nan')

  def update(self, done: int, items_per_step: float = 1.0, extra: str = '') -> float:
    """Prints the line (unless within `min_interval_s` of the last one and not finished)."""
    now = time.perf_counter()
    if now - self._last_t < self.min_interval_s and done < self.total:
      return self.rate
    dt = max(now - self._last_t, 1e-9)
    self.rate = (done - self._last_n) * items_per_step / dt
    steps_rate = (done - self._last_n) / dt
    self._last_t, self._last_n = now, done
    if jax.process_index() == 0:
      eta = (self.total - done) / steps_rate if steps_rate > 0 else float('inf')
      eta_s = time.strftime('%H:%M:%S', time.gmtime(eta)) if math.isfinite(eta) else '?'
      pct = 100.0 * done / max(self.total, 1)
      print(f'[{self.name}] {done}/{self.total} ({pct:.0f}%)  {self.rate:.1f} {self.unit}/s  '
            f'ETA {eta_s}  {extra}'.rstrip(), file=self.stream, flush=True)
    return self.rate


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


def plot_curves(logdir: str, title: str = '') -> str | None:
  """`<logdir>/curves.png`: training loss and accuracy, and the held-out ones when logged."""
  records = read_records(logdir)
  if len(records) < 2:
    return None
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  for ax, what in zip(axes, ('loss', 'accuracy')):
    for key, label in ((what, 'train (batch)'), (f'val_{what}', 'held-out')):
      pts = [(r['step'], r[key]) for r in records if key in r]
      if pts:
        ax.plot(*zip(*pts), marker='.' if len(pts) < 30 else None, label=label)
    ax.set_xlabel('step')
    ax.set_ylabel(what)
    ax.legend()
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  path = os.path.join(logdir, 'curves.png')
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
  return path
