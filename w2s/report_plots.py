"""The figures of `w2s.report` over many runs: accuracy.png, pgr.png and curves.png.

With a numeric swept key on x (e.g. strong-model layers) the runs are points of a line with a
95% t-interval band; without one the runs are unrelated categories and get grouped bars (each
seed's value as a dot), never a line between them. Panels of one figure share one y scale and
one legend; axes are named by the swept key (`plots.axis_name`). A run is a dict of
`report.find_runs` ({name, dir, overrides, axes, results}).
"""
import os

import numpy as np

from w2s import plots, scores
from w2s.protocols import results as results_lib

MAX_LEGEND_LINES = 24  # more runs than this in one panel: their names are left out of the legend


def _series(runs, x, groups):
  """{group label: [(x value, run)] sorted by x}."""
  out: dict[str, list] = {}
  for i, r in enumerate(runs):
    label = ', '.join(f'{plots.axis_name(g)} = {_value(r["overrides"].get(g))}' for g in groups)
    xv = r['overrides'].get(x, i) if x else i
    out.setdefault(label or 'all runs', []).append((xv, r))
  return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def _value(v):
  return v if isinstance(v, (int, float, str)) else str(v)


def _band(ax, xs, stats, k, label, color, style='-'):
  """The means as a line, the t-intervals as a band (none where a run has fewer than 3 seeds)."""
  mean, lo, hi = (np.array(v) for v in zip(*(plots.ends(s, k) for s in stats)))
  ax.plot(xs, mean, style, marker='o', color=color, label=label)
  if all(isinstance(v, (int, np.integer)) for v in xs):
    ax.set_xticks(sorted(set(xs)))
  ax.fill_between(xs, lo, hi, color=color, alpha=0.18)


def _entries(run, losses):
  """[(label, summary, color)] of one run: weak, each student, ceiling (test accuracy)."""
  summ = run['results']['summary']
  first = next(iter(summ.values()))
  return ([('weak', first['acc_weak'], '#888888')]
          + [(f'student {n}', summ[n]['acc_student'], plots.series_color(j))
             for j, n in enumerate(losses) if n in summ]
          + [('ceiling (strong on truth)', first['acc_ceiling'], '#228833')])


def _figure_legend(fig, axes, keys=(), ncol=None):
  """One legend for the figure, below it: `keys` (proxy artists) and every labelled artist of
  `axes`, each label once."""
  handles = {k.get_label(): k for k in keys}
  for ax in axes:
    for h, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, h)
  if handles:
    fig.legend(handles.values(), handles.keys(), fontsize=8, frameon=False,
               loc='outside lower center', ncol=ncol or min(len(handles), 4))


def _grouped_bars(fig, runs, per_run, ylabel, k):
  """Runs as categories on x, the bars of `per_run(run)` -> [(label, summary, color)] side by side
  in each; the value axis from zero or visibly broken. Returns the axes."""
  bars = [per_run(r) for r in runs]
  width = 0.8 / max(len(b) for b in bars)
  va = plots.ValueAxes(fig, fig.add_gridspec(1, 1)[0],
                       plots.value_span([s for b in bars for _, s, _ in b], k))
  for i, entries in enumerate(bars):
    for j, (label, s, color) in enumerate(entries):
      for ax in va.axes:
        plots.seed_bars(ax, [i + (j - (len(entries) - 1) / 2) * width], [s], k, color,
                        width=width * 0.95, label=label if ax is va.axes[0] else None)
  names = [r['name'] for r in runs]
  va.axes[-1].set_xticks(range(len(runs)), names, rotation=25 if len(runs) > 3 else 0,
                         ha='right' if len(runs) > 3 else 'center', fontsize=8)
  va.finish(ylabel)
  return va.axes


def plot_accuracy(runs, x, groups, out, losses) -> str:
  plt = plots.pyplot()
  note = f'{_smoke(runs)}weak-to-strong test accuracy, {_interval_note(runs)}'
  if x is None:  # unrelated runs: grouped bars, one group per run
    fig = plt.figure(figsize=(max(5.0, 1.1 * len(runs) * (len(losses) + 2) / 2 + 2), 4.4),
                     layout='constrained')
    axes = _grouped_bars(fig, runs, lambda r: _entries(r, losses), 'test accuracy (%)', 100)
    fig.suptitle(note + '\nruns side by side: no numeric swept axis', fontsize=9)
    _figure_legend(fig, axes[:1])
    return plots.save(fig, os.path.join(out, 'accuracy.png'), dpi=110)
  series = _series(runs, x, groups)
  fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series) + 1.8, 3.8), squeeze=False,
                           sharey=True, layout='constrained')
  for ax, (label, pts) in zip(axes[0], series.items()):
    curves = {}
    for xv, r in pts:
      for name, s, color in _entries(r, losses):
        curves.setdefault(name, ([], [], color))[0].append(xv)
        curves[name][1].append(s)
    for name, (cx, stats, color) in curves.items():
      _band(ax, cx, stats, 100, name, color, '--' if name == 'weak' else '-')
    ax.set_title(label, fontsize=9)
    ax.set_xlabel(plots.axis_name(x))
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('test accuracy (%)')
  _figure_legend(fig, axes[0])
  fig.suptitle(note, fontsize=10)
  return plots.save(fig, os.path.join(out, 'accuracy.png'), dpi=110)


def plot_pgr(runs, x, groups, out, losses) -> str:
  plt = plots.pyplot()
  note = f'{_smoke(runs)}PGR (0 = weak, 1 = ceiling), {_interval_note(runs)}'
  if x is None:
    per_run = lambda r: [(f'student {n}', r['results']['summary'][n]['pgr'],
                          plots.series_color(j))
                         for j, n in enumerate(losses) if n in r['results']['summary']]
    fig = plt.figure(figsize=(max(5.0, 0.9 * len(runs) * len(losses) + 2), 4.2),
                     layout='constrained')
    axes = _grouped_bars(fig, runs, per_run, 'PGR', 1.0)
    for ax in axes:
      ax.axhline(0, color='black', lw=0.8)
      ax.axhline(1, color='#228833', lw=0.8, ls='--')
    fig.suptitle(note + '\nruns side by side: no numeric swept axis', fontsize=9)
    _figure_legend(fig, axes[:1])
    return plots.save(fig, os.path.join(out, 'pgr.png'), dpi=110)
  series = _series(runs, x, groups)
  fig, axes = plt.subplots(1, len(losses), figsize=(4.2 * len(losses) + 1.8, 3.8), squeeze=False,
                           sharey=True, layout='constrained')
  colors = plt.get_cmap('viridis')
  for ax, loss in zip(axes[0], losses):
    for j, (label, pts) in enumerate(series.items()):
      pts = [p for p in pts if loss in p[1]['results']['summary']]
      _band(ax, [p[0] for p in pts], [p[1]['results']['summary'][loss]['pgr'] for p in pts], 1,
            label, colors(j / max(1, len(series) - 1)))
    ax.axhline(0, color='black', lw=0.8)
    ax.axhline(1, color='#228833', lw=0.8, ls='--')
    ax.set_title(f'student loss: {loss}', fontsize=9)
    ax.set_xlabel(plots.axis_name(x))
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('PGR (performance gap recovered)')
  _figure_legend(fig, axes[0])
  fig.suptitle(note, fontsize=10)
  return plots.save(fig, os.path.join(out, 'pgr.png'), dpi=110)


def _smoke(runs) -> str:
  return results_lib.SMOKE if any((r['results'].get('config') or {}).get('smoke')
                                  for r in runs) else ''


def _interval_note(runs) -> str:
  counts = [len(r['results'].get('seeds', [])) for r in runs]
  lo, hi = min(counts), max(counts)
  n = f'{lo}' if lo == hi else f'{lo}-{hi}'
  if hi < scores.MIN_SEEDS_FOR_INTERVAL:
    return f'mean over {n} seeds, no interval (fewer than 3 seeds)'
  return (f'mean over {n} seeds, 95% t-intervals'
          + (' where a run has 3 or more' if lo < scores.MIN_SEEDS_FOR_INTERVAL else ''))


def _stage_lines(runs):
  """{stage kind: [(label, [stage dir per seed])]}; runs sharing a stage (a sweep's one weak
  supervisor for every strong model) share one line."""
  kinds: dict[str, dict] = {}
  for r in runs:
    res = r['results']
    root = ((res.get('provenance') or {}).get('config') or {}).get('shared_dir') or \
        (res.get('config') or {}).get('shared_dir') or r['dir']
    dirs: dict[str, list] = {}
    for rec in res.get('per_seed', []):
      for kind, rel in (rec.get('stages') or {}).items():
        dirs.setdefault(kind, []).append(os.path.realpath(os.path.join(root, rel)))
    for kind, ds in dirs.items():
      kinds.setdefault(kind, {}).setdefault(tuple(ds), []).append(r['name'])
  return {kind: [(names[0] + (f' (+{len(names) - 1} sharing it)' if len(names) > 1 else ''),
                  list(ds)) for ds, names in lines.items()] for kind, lines in kinds.items()}


def plot_curves(runs, out) -> str | None:
  """Per stage kind, each run's held-out accuracy over steps (mean and band over seeds) on one
  shared scale. A kind whose stages logged no held-out evaluation (the llp and ssl protocols
  have no val slice) gets one panel per run of its training loss instead: objectives differ
  between runs, so they never share an axis."""
  panels = []  # (stage kind, '' or the one run of a training-loss panel, [(label, curves, marks)])
  for kind, lines in _stage_lines(runs).items():
    held = [(label, *plots.stage_curves(ds, 'val_accuracy')) for label, ds in lines]
    if all(any(len(s) for s, _ in curves) for _, curves, _ in held):
      panels.append((kind, '', held))
      continue
    for label, ds in lines:
      curves, _ = plots.stage_curves(ds, 'loss')
      if any(len(s) for s, _ in curves):
        panels.append((kind, label, [(label, curves, None)]))
  if not panels:
    return None
  plt = plots.pyplot()
  cols = min(4, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.1 * cols + 2.2, 3.3 * rows), squeeze=False,
                           layout='constrained')
  labels = list(dict.fromkeys(label for _, _, lines in panels for label, _, _ in lines))
  cmap = plt.get_cmap('tab10' if len(labels) <= 10 else 'viridis')
  color = lambda label: cmap(labels.index(label) if len(labels) <= 10
                             else labels.index(label) / (len(labels) - 1))
  held_axes, held_values, n_seeds, few, marked = [], [], 0, True, False
  for ax, (kind, run, lines) in zip(axes.ravel(), panels):
    held = not run  # a panel of one run: its training loss
    few &= len(lines) <= 3
    for label, curves, selected in lines:
      marked |= len(lines) <= 3 and any(s is not None for s in selected or [])
      n_seeds = max(n_seeds, plots.seed_band(
          ax, curves, k=100 if held else 1, color=color(label), label=label,
          selected=selected if len(lines) <= 3 else None, seed_lines=len(lines) <= 3))
      held_values += [100 * v for _, vals in curves for v in vals] if held else []
    ax.set_title(f'{kind.replace("_", " ")}' + (f'\n{results_lib.held_out_against(kind)}' if held
                                                 else f': {run}\ntraining loss (no held-out '
                                                      'evaluation logged)'), fontsize=8.5)
    ax.set_ylabel("held-out accuracy (%)\nvs the stage's own labels" if held
                  else "training loss\n(this run's own objective)")
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if held:
      held_axes.append(ax)
  for ax in axes.ravel()[len(panels):]:
    ax.set_visible(False)
  if held_values:  # one scale for every held-out accuracy panel (a band may run past it)
    pad = 0.06 * (max(held_values) - min(held_values)) + 0.5
    for ax in held_axes:
      ax.set_ylim(max(0.0, min(held_values) - pad), min(100.0, max(held_values)) + pad)
  keys = plots.legend_keys(n_seeds, seed_lines=few, marks=marked)
  _figure_legend(fig, axes.ravel() if len(labels) <= MAX_LEGEND_LINES else [], keys, ncol=cols)
  fig.suptitle(f'{_smoke(runs)}training curves over seeds, per stage kind'
               + ('' if len(labels) <= MAX_LEGEND_LINES else
                  f' ({len(labels)} runs: names left out, colors in run order)'), fontsize=10)
  return plots.save(fig, os.path.join(out, 'curves.png'), dpi=110)
