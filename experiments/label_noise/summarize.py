"""The noise-robust-loss study's table and plot from a finished sweep (`configs/label_noise.py`).

    python experiments/label_noise/summarize.py runs/label_noise --out experiments/label_noise

Reads every point's results.json (test accuracy, the realised noise rate), groups the points by
(noise, rate, loss) over seeds and writes `table.md` (mean [95% t-interval] test accuracy, the
paired difference to xent on the same seeds and noisy sets, the realised rate) and `accuracy.png`
(one panel per noise kind: accuracy against the rate, one line per loss with its t-interval as a
band and each seed a dot; the clean reference as a dashed line). Intervals are
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

LOSS_ORDER = ('xent', 'gce', 'elr', 'bootstrap')


def loss_label(cfg: dict) -> str:
  name = cfg['name']
  return f"{name}_hard" if name == 'bootstrap' and cfg.get('mode') == 'hard' else name


def read_runs(workdir: str) -> list[dict]:
  """[{noise, rate, loss, seed, acc, realised}] of every finished point under workdir."""
  runs = []
  for name in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, name, 'results.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      r = json.load(f)
    cfg = r['provenance']['config']
    noise = cfg.get('label_noise') or {}
    rate = float(noise.get('rate', 0.0))
    runs.append(dict(noise='clean' if rate == 0 else noise['name'], rate=rate,
                     loss=loss_label(cfg['loss']), seed=int(cfg['seed']),
                     acc=100 * float(r['accuracy']),
                     realised=100 * float(r['label_noise']['realised_rate']) if rate else 0.0,
                     steps=int(r['steps'])))
  return runs


def fmt(s: scores.SeedSummary, signed: bool = False) -> str:
  sign = '+' if signed else ''
  if s.interval == 'none':
    return ', '.join(f'{v:{sign}.2f}' for v in s.values) + ' (values, < 3 seeds)'
  return f'{s.mean:{sign}.2f} [{s.lo:{sign}.2f}, {s.hi:{sign}.2f}]'


def table(runs: list[dict]) -> tuple[str, dict]:
  groups = collections.defaultdict(dict)
  for r in runs:
    groups[(r['noise'], r['rate'], r['loss'])][r['seed']] = r
  lines = ['| noise | rate | loss | seeds | test acc (%) | minus xent, paired (points) | '
           'realised noise (%) |', '|---|---|---|---|---|---|---|']
  summary = {}
  keys = sorted(groups, key=lambda k: (k[0] != 'clean', k[0], k[1],
                                       LOSS_ORDER.index(k[2]) if k[2] in LOSS_ORDER else 9))
  for noise, rate, loss in keys:
    by_seed = groups[(noise, rate, loss)]
    seeds = sorted(by_seed)
    acc = scores.summarize_seeds([by_seed[s]['acc'] for s in seeds])
    base = groups.get((noise, rate, 'xent'), {})
    shared = [s for s in seeds if s in base]
    diff = ('' if loss == 'xent' or len(shared) < 1 else
            fmt(scores.paired_difference([by_seed[s]['acc'] for s in shared],
                                         [base[s]['acc'] for s in shared]), signed=True))
    realised = np.mean([by_seed[s]['realised'] for s in seeds])
    lines.append(f'| {noise} | {rate:.1f} | {loss} | {len(seeds)} | {fmt(acc)} | {diff} | '
                 f'{realised:.1f} |')
    summary[(noise, rate, loss)] = acc
  return '\n'.join(lines) + '\n', summary


def plot(summary: dict, out: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  kinds = [k for k in ('symmetric', 'asymmetric') if any(key[0] == k for key in summary)]
  if not kinds:
    return
  fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4), squeeze=False,
                           sharey=True)
  clean = summary.get(('clean', 0.0, 'xent'))
  for ax, kind in zip(axes[0], kinds):
    losses = sorted({k[2] for k in summary if k[0] == kind},
                    key=lambda n: LOSS_ORDER.index(n) if n in LOSS_ORDER else 9)
    for i, loss in enumerate(losses):
      rates = sorted(k[1] for k in summary if k[0] == kind and k[2] == loss)
      s = [summary[(kind, r, loss)] for r in rates]
      x = np.asarray(rates) + (i - (len(losses) - 1) / 2) * 0.006  # side by side, not on top
      line, = ax.plot(x, [v.mean for v in s], marker='o', label=loss)
      ax.fill_between(x, [v.lo for v in s], [v.hi for v in s], alpha=0.15, color=line.get_color())
      for xi, v in zip(x, s):
        ax.scatter([xi] * len(v.values), v.values, s=8, color=line.get_color(), alpha=0.5)
    if clean is not None:
      ax.axhline(clean.mean, ls='--', color='gray', label='clean labels (xent)')
    ax.set_title(f'{kind} noise, MNIST-5k, cnn:small (5 seeds, 95% t-bands)')
    ax.set_xlabel('noise rate (training labels)')
    ax.set_xticks(sorted({k[1] for k in summary if k[0] == kind}))
  axes[0][0].set_ylabel('test accuracy (%)')
  axes[0][-1].legend(loc='lower left', fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, 'accuracy.png'), dpi=110)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('workdir')
  p.add_argument('--out', default=None)
  a = p.parse_args(argv)
  runs = read_runs(a.workdir)
  if not runs:
    sys.exit(f'error: no finished point (results.json) under {a.workdir}; run the sweep first')
  text, summary = table(runs)
  out = a.out or a.workdir
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'table.md'), 'w') as f:
    f.write(text)
  plot(summary, out)
  print(text)
  print(f'{len(runs)} runs; wrote {out}/table.md and {out}/accuracy.png')


if __name__ == '__main__':
  main()
