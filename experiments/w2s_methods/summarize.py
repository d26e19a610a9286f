"""The W2S methods study's table and plot from its finished sweeps (`configs/w2s_methods.py`).

    python experiments/w2s_methods/summarize.py runs/w2s_methods_rt runs/w2s_methods_mnist --out experiments/w2s_methods

For each sweep directory (one task) and each of its points' results.json, one row per student:
the method (the loss; `clean=<cleaner>` or `specialists` when the point adds them), test accuracy
of weak / student / ceiling and PGR, each mean [95% t-interval] over seeds, and the paired
difference of the student's accuracy and PGR to the plain `xent` student of the base point on the
same seeds (same splits and weak members: the sweep shares its stages). Writes `table.md` and
`pgr.png` (PGR per method with its t-interval and each seed's value, one panel per task).
Intervals: `w2s.scores.summarize_seeds` / `paired_difference` (none below 3 seeds).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
from w2s import scores  # pylint: disable=wrong-import-position


def _fmt(s: scores.SeedSummary, scale: float = 100.0, signed: bool = False, digits: int = 1) -> str:
  f = f"{'+' if signed else ''}.{digits}f"
  if s.n == 0:
    return 'n/a'
  if s.interval == 'none':
    return ', '.join(format(v * scale, f) for v in s.values) + f' (n={s.n})'
  nan = f' ({s.n_nan} undefined)' if s.n_nan else ''
  return f'{format(s.mean * scale, f)} [{format(s.lo * scale, f)}, {format(s.hi * scale, f)}]{nan}'


def _method(config: dict, loss: str) -> str:
  parts = [loss]
  if config.get('clean'):
    parts.append(f"clean={config['clean']['name']}")
  if (config.get('weak', {}).get('ensemble') or {}).get('specialists'):
    parts.append('specialist teachers')
  return ', '.join(parts)


def read_task(workdir: str) -> tuple[str, list[dict]]:
  """(task label, rows), rows [{method, per-seed arrays}] in the sweep's point order."""
  with open(os.path.join(workdir, 'sweep.json')) as f:
    meta = json.load(f)
  rows, task = [], None
  for point in meta['points']:
    name = point['name'] if isinstance(point, dict) else point
    path = os.path.join(workdir, name, 'results.json')
    if not os.path.exists(path):
      print(f'note: {name} has no results.json yet (skipped)', file=sys.stderr)
      continue
    with open(path) as f:
      r = json.load(f)
    config = r['config']
    task = task or config['dataset']['name']
    for loss in config.get('student_order') or list(r['summary']):
      rows.append(dict(method=_method(config, loss), point=name,
                       seeds=tuple(seed['seed'] for seed in r['per_seed']),
                       **{k: _per_seed(r, loss, k)
                          for k in ('acc_weak', 'acc_student', 'acc_ceiling', 'pgr')}))
  return task, rows


def _per_seed(r, loss, key) -> np.ndarray:
  """[S] the per-seed values of `key` for `loss`, NaN where undefined (PGR)."""
  return np.asarray([np.nan if seed[loss][key] is None else seed[loss][key]
                     for seed in r['per_seed']], np.float64)


def table(task: str, rows: list[dict]) -> str:
  base = next((r for r in rows if r['method'] == 'xent'), None)
  out = [f'### {task}', '',
         '| method | weak acc | student acc | ceiling acc | PGR | student - xent (points, paired) '
         '| PGR - xent (paired) |', '|---|---|---|---|---|---|---|']
  for r in rows:
    acc = scores.summarize_seeds(r['acc_student'])
    cells = [_fmt(scores.summarize_seeds(r['acc_weak'])), _fmt(acc),
             _fmt(scores.summarize_seeds(r['acc_ceiling'])),
             _fmt(scores.summarize_seeds(r['pgr']), scale=1.0, digits=2)]
    if base is None or r is base or r['seeds'] != base['seeds']:
      cells += ['', '']
    else:
      cells += [_fmt(scores.paired_difference(r['acc_student'], base['acc_student']), signed=True),
                _fmt(scores.paired_difference(r['pgr'], base['pgr']), scale=1.0, signed=True,
                     digits=2)]
    out.append(f"| {r['method']} | " + ' | '.join(cells) + ' |')
  return '\n'.join(out) + '\n'


def plot(tasks: list[tuple[str, list[dict]]], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 5), squeeze=False)
  for ax, (task, rows) in zip(axes[0], tasks):
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
      s = scores.summarize_seeds(r['pgr'])
      if s.n:
        if s.interval != 'none':
          ax.errorbar(s.mean, yi, xerr=[[s.mean - s.lo], [s.hi - s.mean]], fmt='o', color='C0',
                      capsize=3)
        else:
          ax.plot(s.mean, yi, 'o', color='C0')
        ax.scatter(s.values, [yi] * len(s.values), s=10, color='C1', alpha=0.6, zorder=3)
    ax.axvline(0, color='gray', lw=0.8)
    ax.axvline(1, color='gray', lw=0.8, ls=':')
    ax.set_yticks(y)
    ax.set_yticklabels([r['method'] for r in rows], fontsize=8)
    n = max((len(r['seeds']) for r in rows), default=0)
    ax.set_title(f'{task}: PGR by method ({n} seeds; 95% t-intervals, dots: seeds)')
    ax.set_xlabel('PGR (0: the weak supervisor, 1: the ceiling)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('workdirs', nargs='+')
  p.add_argument('--out', required=True)
  a = p.parse_args(argv)
  tasks = []
  for d in a.workdirs:
    if not os.path.exists(os.path.join(d, 'sweep.json')):
      sys.exit(f'error: {d} has no sweep.json; run the sweep (configs/w2s_methods.py) first')
    task, rows = read_task(d)
    if rows:
      tasks.append((task, rows))
  if not tasks:
    sys.exit('error: no finished point in ' + ', '.join(a.workdirs))
  os.makedirs(a.out, exist_ok=True)
  text = '\n'.join(table(t, r) for t, r in tasks)
  with open(os.path.join(a.out, 'table.md'), 'w') as f:
    f.write(text)
  plot(tasks, os.path.join(a.out, 'pgr.png'))
  print(text)
  print(f'wrote {a.out}/table.md and {a.out}/pgr.png')


if __name__ == '__main__':
  main()
