"""Self-training results over seeds: per-round test accuracy and pseudo-label quality (mean and
Student-t 95% interval, none below 3 seeds), the printed table and `rounds.png`."""
import os

import numpy as np

from w2s import plots, scores
from w2s.protocols import results as results_lib

ROUND_METRICS = ('acc', 'ece')
PSEUDO_METRICS = ('accuracy', 'coverage', 'utilisation')


def summarize(per_seed: list[dict], config: dict) -> dict:
  """{'per_seed', 'summary': {'supervised', 'final', 'gain', 'rounds': [...]}, 'seeds', 'config'}.

  'supervised' is round 0 (the teacher on the labelled set only), 'final' the last round, 'gain'
  final - supervised per seed (a paired difference: its interval says whether self-training
  helped)."""
  n_rounds = len(per_seed[0]['rounds'])
  rounds = []
  for r in range(n_rounds):
    recs = [s['rounds'][r] for s in per_seed]
    entry = {'round': r, **{m: scores.summarize_seeds([x[m] for x in recs])._asdict()
                            for m in ROUND_METRICS}}
    if 'pseudo' in recs[0]:
      entry['pseudo'] = {m: scores.summarize_seeds([x['pseudo'][m] for x in recs])._asdict()
                         for m in PSEUDO_METRICS}
    rounds.append(entry)
  acc = lambda r: [s['rounds'][r]['acc'] for s in per_seed]
  summary = {'supervised': rounds[0]['acc'], 'final': rounds[-1]['acc'],
             'gain': scores.paired_difference(acc(-1), acc(0))._asdict(),
             'rounds': rounds}
  return {'per_seed': per_seed, 'summary': summary, 'seeds': [s['seed'] for s in per_seed],
          'config': config}


def _fmt(s: dict) -> str:
  return scores.fmt_summary(s, 100.0)


def table(results: dict) -> str:
  rows = [('round', 'test acc %', 'ECE %', 'pseudo acc %', 'coverage %', 'utilisation %')]
  for r in results['summary']['rounds']:
    p = r.get('pseudo')
    rows.append((str(r['round']) + (' (supervised)' if r['round'] == 0 else ''),
                 _fmt(r['acc']), _fmt(r['ece']),
                 *((_fmt(p[m]) for m in PSEUDO_METRICS) if p else ('-',) * 3)))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  gain = results['summary']['gain']
  return (f'{results_lib.smoke_note(results.get("config"))}self-training, test set, '
          f'{results_lib.interval_note(len(results["seeds"]))}:\n' + '\n'.join(lines) +
          f'\ngain of the last round over supervised-only (paired, same seeds): {_fmt(gain)} '
          'points')


def plot(results: dict, workdir: str) -> str:
  """rounds.png: test accuracy per round (left), pseudo-label accuracy and coverage (right)."""
  return plots.save(figure(results), os.path.join(workdir, 'rounds.png'), dpi=110)


def figure(results: dict):
  """The figure of `plot`: means over seeds as lines, 95% t-interval bands (none below 3 seeds:
  each seed's value shows as a dot), the smoke and interval notes in the title."""
  plt = plots.pyplot()
  rounds = results['summary']['rounds']
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6), layout='constrained')
  _band(a1, rounds, lambda r: r['acc'], 'test accuracy', '#4477aa')
  a1.set_ylabel('test accuracy (%)')
  a1.set_title('test accuracy per round (0 = supervised only)', fontsize=9)
  later = [r for r in rounds if 'pseudo' in r]
  for m, color in (('accuracy', '#228833'), ('coverage', '#ee6677')):
    _band(a2, later, lambda r, m=m: r['pseudo'][m], f'pseudo-label {m}', color)
  a2.set_ylabel('%')
  a2.set_title('pseudo-labels on U (vs its hidden labels)', fontsize=9)
  for ax in (a1, a2):
    ax.set_xlabel('round')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  n = len(results['seeds'])
  band = ', bands: 95% t-interval' if n >= scores.MIN_SEEDS_FOR_INTERVAL else ''
  fig.suptitle(f'{results_lib.smoke_note(results.get("config"))}self-training, '
               f'{results_lib.interval_note(n)}{band}; dots: each seed', fontsize=10)
  return fig


def _band(ax, rounds, get, label, color):
  if not rounds:
    return
  xs = [r['round'] for r in rounds]
  mean, lo, hi = (np.array(v) for v in zip(*(plots.ends(get(r), 100) for r in rounds)))
  ax.plot(xs, mean, marker='o', color=color, label=label)
  ax.fill_between(xs, lo, hi, color=color, alpha=0.2)  # NaN (no band) below 3 seeds
  for x, r in zip(xs, rounds):  # each seed's value
    vals = get(r).get('values') or []
    ax.plot([x] * len(vals), [100 * v for v in vals], '.', color=color, alpha=0.5)
  ax.set_xticks(xs)
