"""The every-SSL-algorithm study's table and plot from a finished sweep (`configs/ssl.py`).

    python -m w2s.sweep --config configs/ssl.py:algos=all,steps=400,seeds=3 --workdir runs/ssl_all
    python experiments/ssl_all/summarize.py runs/ssl_all --out experiments/ssl_all \
        [--extra runs/mixmatch-40 ...]   # single runs as more rows, e.g. other hparams

Reads every point's results.json and writes `table.md`: per label count, one row per algorithm
with its test accuracy (mean [95% t-interval] over seeds), the paired differences to the
labelled-only baseline and to FixMatch on the same seeds (a seed fixes the labelled draw, the
initialisation and the data order, so the pairs share everything but the algorithm), the last
logged batch's mask rate and pseudo-label accuracy on U, and the point's wall time; and
`accuracy.png`: one column per label count, algorithms sorted by mean accuracy; top, test
accuracy with its t-interval and the seeds as dots (labelled-only's mean dashed); bottom, the
paired difference to labelled-only with its t-interval (0 dashed). Intervals are
`w2s.scores.summarize_seeds` / `paired_difference`; none below 3 seeds.
"""
import argparse
import collections
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
from w2s import scores  # pylint: disable=wrong-import-position


def algo_label(ssl: dict) -> str:
  """'fixmatch', or 'mixmatch(warmup=0.4)' for a run that set the algorithm's hparams."""
  extra = ', '.join(f'{k}={v}' for k, v in sorted(ssl.items()) if k != 'name')
  return f'{ssl["name"]}({extra})' if extra else ssl['name']


def read_points(workdir: str) -> list[dict]:
  """[{labels, algo, acc {seed: %}, mask, pseudo, wall, steps, smoke}] of each finished point
  under workdir (a sweep), or of workdir itself when it is one run."""
  points = []
  own = os.path.exists(os.path.join(workdir, 'results.json'))
  for name in ([''] if own else sorted(os.listdir(workdir))):
    path = os.path.join(workdir, name, 'results.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    cfg = r['provenance']['config']
    seeds = r['per_seed']
    points.append(dict(
        labels=sum(seeds[0]['labelled_per_class']), algo=algo_label(cfg['model']['train']['ssl']),
        acc={s['seed']: 100 * s['acc'] for s in seeds},
        mask=[100 * s['mask_rate'] for s in seeds if s.get('mask_rate') is not None],
        pseudo=[100 * s['pseudo_acc'] for s in seeds if s.get('pseudo_acc') is not None],
        wall=float(r['provenance'].get('wall_seconds', float('nan'))),
        steps=int(cfg['model']['train']['num_steps']), smoke=bool(cfg.get('smoke'))))
  return points


def _paired(p: dict, base: dict | None) -> str:
  if base is None or base is p:
    return ''
  shared = sorted(set(p['acc']) & set(base['acc']))
  if not shared:
    return ''
  return scores.fmt_summary(scores.paired_difference([p['acc'][s] for s in shared],
                                      [base['acc'][s] for s in shared]), digits=1,
                            signed=True)


def table(points: list[dict]) -> tuple[str, dict]:
  by_labels = collections.defaultdict(dict)
  for p in points:
    by_labels[p['labels']][p['algo']] = p
  lines, summary, diffs = [], {}, {}
  for labels in sorted(by_labels):
    group = by_labels[labels]
    sup, fix = group.get('supervised'), group.get('fixmatch')
    lines += [f'\n### {labels} labels\n',
              '| algorithm | seeds | test acc (%) | minus labelled-only, paired | '
              'minus FixMatch, paired | mask rate (%) | pseudo-label acc (%) | wall (s) |',
              '|---|---|---|---|---|---|---|---|']
    for algo in sorted(group, key=lambda a: -np.mean(list(group[a]['acc'].values()))):
      p = group[algo]
      acc = scores.summarize_seeds([p['acc'][s] for s in sorted(p['acc'])])
      summary[(labels, algo)] = acc
      if sup is not None and algo != 'supervised':
        shared = sorted(set(p['acc']) & set(sup['acc']))
        diffs[(labels, algo)] = scores.paired_difference([p['acc'][s] for s in shared],
                                                         [sup['acc'][s] for s in shared])
      mask = f'{np.mean(p["mask"]):.0f}' if p['mask'] else '-'
      pseudo = f'{np.mean(p["pseudo"]):.0f}' if p['pseudo'] else '-'
      lines.append(f'| {algo} | {len(p["acc"])} | {scores.fmt_summary(acc, digits=1)} | {_paired(p, sup)} | '
                   f'{_paired(p, fix)} | {mask} | {pseudo} | {p["wall"]:.0f} |')
  return '\n'.join(lines).lstrip('\n') + '\n', summary, diffs


def plot(summary: dict, diffs: dict, out: str, steps: int) -> None:
  """Top: accuracy (mean, t-interval, seeds); bottom: paired difference to labelled-only."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  label_counts = sorted({k[0] for k in summary})
  fig, axes = plt.subplots(2, len(label_counts), figsize=(6 * len(label_counts), 11),
                           squeeze=False)
  for col, labels in enumerate(label_counts):
    algos = sorted((k[1] for k in summary if k[0] == labels),
                   key=lambda a: summary[(labels, a)].mean)
    for row, (stats, title) in enumerate(((summary, 'test accuracy (%)'),
                                          (diffs, 'minus labelled-only, paired (points)'))):
      ax = axes[row][col]
      for y, algo in enumerate(algos):
        s = stats.get((labels, algo))
        if s is None:
          continue
        color = 'tab:gray' if algo == 'supervised' else 'tab:blue'
        ax.scatter(s.values, [y] * len(s.values), s=10, color='k', alpha=0.5, zorder=3)
        if s.interval != 'none':
          ax.errorbar(s.mean, y, xerr=[[s.mean - s.lo], [s.hi - s.mean]], fmt='o', color=color,
                      capsize=3)
        else:
          ax.scatter([s.mean], [y], color=color)
      ref = (summary.get((labels, 'supervised')).mean if row == 0 and
             (labels, 'supervised') in summary else 0.0 if row == 1 else None)
      if ref is not None:
        ax.axvline(ref, ls='--', color='gray', label='labelled only' if row == 0 else None)
      ax.set_yticks(range(len(algos)), algos)
      ax.set_xlabel(title)
      ax.grid(axis='x', alpha=0.3)
      if row == 0:
        ax.set_title(f'MNIST-5k, {labels} labels, cnn:small, {steps} steps\n'
                     '(mean and 95% t-interval over seeds; seeds as dots)')
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'accuracy.png'), dpi=110)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('workdir')
  p.add_argument('--extra', nargs='*', default=[],
                 help='single runs to add as rows (e.g. an algorithm with other hparams)')
  p.add_argument('--out', default=None)
  a = p.parse_args(argv)
  points = [pt for d in [a.workdir] + a.extra for pt in read_points(d)]
  if not points:
    sys.exit(f'error: no finished point (results.json) under {a.workdir}; run the sweep first')
  if len({pt['steps'] for pt in points}) != 1:
    sys.exit(f'error: the points under {a.workdir} ran different schedules '
             f'({sorted({pt["steps"] for pt in points})} steps); one table needs one schedule')
  text, summary, diffs = table(points)
  if any(pt['smoke'] for pt in points):
    text = '**SMOKE RUN (runlocal): not a result.**\n\n' + text
  out = a.out or a.workdir
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'table.md'), 'w') as f:
    f.write(text)
  plot(summary, diffs, out, points[0]['steps'])
  print(text)
  print(f'{len(points)} points; wrote {out}/table.md and {out}/accuracy.png')


if __name__ == '__main__':
  main()
