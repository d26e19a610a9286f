"""Figure pieces shared by the trainer, the protocols' results and `w2s.report` (matplotlib, Agg).

* `plot_curves`: one training run's `curves.png` (loss and accuracy, train batch and held-out);
* `seed_line`: a mean line over an x axis (a budget) with its t-interval band and the seeds;
* `seed_bars` on `ValueAxes`: bars at the mean over seeds with the Student-t interval and each
  seed's value, on a value axis that starts at zero or is visibly broken (never silently cut);
* `seed_band`: a curve over steps per seed, their mean and a band (t-interval from 3 seeds,
  min-max of 2), and the step `select='best'` kept;
* `reliability`: a reliability diagram (Guo et al. 2017, "On Calibration of Modern Neural
  Networks") with sklearn's binning, the bins of `w2s.scores.ece`.

Summaries are the dicts of `scores.summarize_seeds` (`results.json` stores their NaN as null).
Every file is written atomically (`save`).
"""
import json
import os

import numpy as np

from w2s import metrics, scores


def pyplot():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def save(fig, path: str, dpi: int = 120) -> str:
  """Writes `fig` to `path` (temp file + rename) and closes it."""
  plt = pyplot()
  fig.savefig(path + '.tmp.png', dpi=dpi, bbox_inches='tight')
  plt.close(fig)
  os.replace(path + '.tmp.png', path)
  return path


def plot_curves(logdir: str, title: str = '') -> str | None:
  """`<logdir>/curves.png`: training loss and accuracy, and the held-out ones when logged."""
  records = metrics.read_records(logdir)
  if len(records) < 2:
    return None
  plt = pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout='constrained')
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
  return save(fig, os.path.join(logdir, 'curves.png'), dpi=100)


def series_color(i: int):
  """The i-th color for students and runs: tab10 without its green (the ceiling's)."""
  return pyplot().get_cmap('tab10')([0, 1, 3, 4, 5, 6, 8, 9][i % 8])


def ends(s: dict, k: float = 1.0) -> tuple[float, float, float]:
  """(mean, lo, hi) of a summary times k; NaN for what is missing (no value, no interval, null)."""
  get = lambda p: k * s[p] if s.get('n') and s.get(p) is not None else float('nan')
  return get('mean'), get('lo'), get('hi')


def axis_name(key: str) -> str:
  """A readable axis name for a dotted config key: 'strong.model.layers' -> 'strong model layers',
  'splits.max_weak' -> 'max weak' (the `splits.` section says nothing on an axis)."""
  parts = key.split('.')
  if len(parts) > 1 and parts[0] == 'splits':
    parts = parts[1:]
  return ' '.join(parts).replace('_', ' ')


def seed_bars(ax, xs, stats, k: float, colors, width: float = 0.8, label=None):
  """Bars at the means, 95% t-interval error bars where there is one, and each seed's value as a
  dot (1-2 seeds show as what they are); 'undefined' where no seed has a value. Returns the bar
  container."""
  from matplotlib.colors import is_color_like
  xs = np.asarray(xs, float)
  colors = [colors] * len(xs) if is_color_like(colors) else colors
  means = np.array([ends(s, k)[0] for s in stats])
  bars = ax.bar(xs, np.nan_to_num(means), width=width, color=colors, label=label)
  for x, s in zip(xs, stats):
    mean, lo, hi = ends(s, k)
    if not s.get('n'):  # no seed has a value (PGR when the ceiling never beats the weak model)
      ax.text(x, 0, 'undefined', rotation=90, ha='center', va='bottom', fontsize=7, color='#555555')
    if not np.isnan(lo):
      ax.errorbar([x], [mean], yerr=[[mean - lo], [hi - mean]], color='black', capsize=3, lw=1)
    vals = [k * v for v in s.get('values') or []]
    jitter = np.linspace(-0.18, 0.18, len(vals)) * width if len(vals) > 1 else [0.0] * len(vals)
    ax.plot(x + np.asarray(jitter), vals, 'o', ms=3, color='black', alpha=0.6, zorder=3)
  return bars


def seed_line(ax, xs, stats, *, k: float = 1.0, color, label: str):
  """A line through the means of `stats` (summaries at `xs`), a band over their t-intervals where
  there are some, and each seed's value as a dot (e.g. PGR against a query budget)."""
  xs = np.asarray(xs, float)
  mean, lo, hi = (np.array(v) for v in zip(*(ends(s, k) for s in stats)))
  ax.plot(xs, mean, 'o-', color=color, label=label, lw=1.5, ms=4)
  if np.isfinite(lo).any():
    ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
  for x, s in zip(xs, stats):
    vals = [k * v for v in s.get('values') or []]
    ax.plot([x] * len(vals), vals, '.', ms=3, color=color, alpha=0.6)


def value_span(stats, k: float = 1.0) -> tuple[float, float]:
  """(lowest, highest) of the means, interval ends and seed values of `stats`, times k."""
  vals = [v for s in stats for v in (*ends(s, k), *(k * x for x in s.get('values') or []))]
  vals = [v for v in vals if np.isfinite(v)]
  return (min(vals), max(vals)) if vals else (0.0, 1.0)


class ValueAxes:
  """A value axis for bars: one axis from zero, or, when the values sit far from zero, a visibly
  broken one: the upper axis holds the values, a short stub below it shows the zero the bars
  start from, with break marks between them. Draw the same bars on each of `axes`, then
  `finish`."""

  def __init__(self, fig, cell, span: tuple[float, float]):
    lo, hi = span
    if lo <= 0 or lo < 0.45 * hi:
      self.axes = [fig.add_subplot(cell)]
      self.limits = [(min(0.0, lo - 0.08 * (hi - lo)), hi + 0.08 * (hi - min(lo, 0.0)))]
      return
    sub = cell.subgridspec(2, 1, height_ratios=[6, 1], hspace=0.1)
    upper = fig.add_subplot(sub[0])
    self.axes = [upper, fig.add_subplot(sub[1], sharex=upper)]
    pad = 0.12 * (hi - lo) + 1e-9
    self.limits = [(lo - pad, hi + pad), (0.0, (hi - lo + 2 * pad) / 6)]

  @property
  def broken(self) -> bool:
    return len(self.axes) == 2

  def finish(self, ylabel: str) -> None:
    for ax, lim in zip(self.axes, self.limits):
      ax.set_ylim(*lim)
      ax.grid(axis='y', alpha=0.3)
    self.axes[0].set_ylabel(ylabel)
    if not self.broken:
      return
    upper, stub = self.axes
    upper.spines['bottom'].set_visible(False)
    stub.spines['top'].set_visible(False)
    upper.tick_params(axis='x', bottom=False, labelbottom=False)
    stub.set_yticks([0])
    marks = dict(marker=[(-1, -0.5), (1, 0.5)], markersize=10, linestyle='none', color='black',
                 mec='black', mew=1, clip_on=False)
    upper.plot([0, 1], [0, 0], transform=upper.transAxes, **marks)
    stub.plot([0, 1], [1, 1], transform=stub.transAxes, **marks)
    upper.text(0.01, 0.01, 'axis broken', transform=upper.transAxes, fontsize=7, va='bottom',
               ha='left', color='#555555')


def band_kind(n: int) -> str:
  """What `seed_band`'s band is over n seeds (for legends)."""
  if n >= scores.MIN_SEEDS_FOR_INTERVAL:
    return f'band: 95% t-interval of the mean over {n} seeds'
  return f'band: min-max of {n} seeds' if n == 2 else 'one seed: no band'


def stage_curves(dirs, key: str) -> tuple[list, list]:
  """([(steps, values)] of `key` in each stage directory's metrics.jsonl, [the step its
  done.json says `select='best'` kept, or None]), one entry per directory (seed)."""
  curves, selected = [], []
  for d in dirs:
    recs = [r for r in metrics.read_records(d) if key in r]
    curves.append(([r['step'] for r in recs], [r[key] for r in recs]))
    try:
      with open(os.path.join(d, 'done.json')) as f:
        selected.append(json.load(f).get('best_step'))
    except (OSError, ValueError, AttributeError):  # unfinished or damaged: nothing to mark
      selected.append(None)
  return curves, selected


def legend_keys(n_seeds: int, seed_lines: bool = True, marks: bool = True) -> list:
  """Legend entries (black proxies) for `seed_band`'s mean, band, seed lines and marks."""
  from matplotlib.lines import Line2D
  from matplotlib.patches import Patch
  keys = [Line2D([], [], color='black', lw=1.6, label='mean over seeds')]
  if n_seeds >= 2:
    keys.append(Patch(color='black', alpha=0.2, label=band_kind(n_seeds)))
  if seed_lines:
    keys.append(Line2D([], [], color='black', lw=0.7, alpha=0.4, label='each seed'))
  if marks:
    keys.append(Line2D([], [], ls='none', marker='*', ms=9, color='white', mec='black',
                       label="step kept (select='best': lowest held-out loss)"))
  return keys


def seed_band(ax, curves, *, k: float = 1.0, color, label: str, selected=None,
              seed_lines: bool = True) -> int:
  """Each seed's curve (thin), their mean and a band over the steps every seed logged.

  Args:
    curves: [(steps [T_i], values [T_i])] one per seed.
    selected: [step or [step per ensemble member] or None] per seed: the step `select='best'`
      kept, marked on that seed's curve with a star.
  Returns:
    how many seeds the band is over (0 if there are no curves).
  """
  curves = [(np.asarray(s), k * np.asarray(v, float)) for s, v in curves if len(s)]
  if not curves:
    return 0
  if seed_lines:
    for steps, vals in curves:
      ax.plot(steps, vals, color=color, lw=0.7, alpha=0.35)
  common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves)))
  at = lambda step: [vals[list(steps).index(step)] for steps, vals in curves]
  mean = np.array([np.mean(at(s)) for s in common])
  ax.plot(common, mean, color=color, lw=1.6, marker='o' if len(common) < 15 else None, ms=3,
          label=label)
  if len(curves) >= scores.MIN_SEEDS_FOR_INTERVAL:
    band = np.array([ends(scores.summarize_seeds(at(s))._asdict())[1:] for s in common])
  elif len(curves) == 2:
    band = np.array([(min(at(s)), max(at(s))) for s in common])
  else:
    band = None
  if band is not None and len(common):
    ax.fill_between(common, band[:, 0], band[:, 1], color=color, alpha=0.2, lw=0)
  for (steps, vals), sel in zip(curves, selected or []):
    for step in np.atleast_1d(sel if sel is not None else []):
      hit = np.flatnonzero(steps == step)
      if len(hit):
        ax.plot([step], [vals[hit[-1]]], '*', ms=9, color=color, mec='black', mew=0.5, zorder=4)
  return len(curves)


def reliability(ax, hist_ax, probs, labels, *, label: str, color, num_bins: int = scores.ECE_BINS,
                seed_ece=None) -> dict:
  """Reliability diagram of top-label confidence (max probability) vs accuracy per bin, over the
  rows of all `probs` pooled ([N_i, C] per seed, labels [N_i]); the bins are `scores.ece`'s
  (sklearn's `calibration_curve`, uniform). The legend label gets the ECE: `seed_ece` (a summary
  over seeds: mean [t-interval], or each seed's value below 3 seeds) when given, else the pooled
  rows' ECE. `hist_ax` gets the counts per bin.

  Returns {'accuracy', 'confidence' (per non-empty bin), 'counts' [num_bins], 'ece'}."""
  from sklearn.calibration import calibration_curve
  probs = np.concatenate([np.asarray(p, np.float64) for p in probs])
  y = np.concatenate([np.asarray(l).argmax(-1) if np.ndim(l) == 2 else np.asarray(l)
                      for l in labels])
  conf = np.clip(probs.max(-1), 0.0, 1.0)
  correct = (probs.argmax(-1) == y).astype(int)
  acc, mean_conf = calibration_curve(correct, conf, n_bins=num_bins,
                                     strategy='uniform', pos_label=1)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=num_bins)  # sklearn's bins
  ece_text = f'ECE {100 * scores.ece(probs, y, num_bins):.1f}% (pooled)'
  if seed_ece is not None and seed_ece.get('n'):
    mean, lo, hi = ends(seed_ece, 100)
    ece_text = (f'ECE {mean:.1f}% [{lo:.1f}, {hi:.1f}]' if np.isfinite(lo) else
                'ECE ' + ', '.join(f'{100 * v:.1f}' for v in seed_ece['values']) + '% (per seed)')
  ax.plot(mean_conf, acc, 'o-', color=color, ms=4, lw=1.3, label=f'{label}: {ece_text}')
  hist_ax.stairs(counts, edges, color=color, lw=1.3)
  return {'accuracy': acc, 'confidence': mean_conf, 'counts': counts,
          'ece': scores.ece(probs, y, num_bins)}
