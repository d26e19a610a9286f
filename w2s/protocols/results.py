"""Scores per seed, summaries over seeds (mean and bootstrap 95% CI), the printed table and plots."""
import math
import os

import numpy as np

from w2s import scores

# per-seed, per-student-loss numbers that get a mean and CI over seeds
METRICS = ('acc_weak', 'acc_student', 'acc_ceiling', 'pgr', 'agreement', 'acc_weak_wrong',
           'acc_weak_right', 'auroc_student', 'ece_student')


def score_seed(weak_probs, student_probs, ceiling_probs, labels) -> dict:
  """Test-set numbers of one seed and one student loss ([N, C] probabilities, labels [N])."""
  acc_w = scores.accuracy(weak_probs, labels)
  acc_s = scores.accuracy(student_probs, labels)
  acc_c = scores.accuracy(ceiling_probs, labels)
  p = scores.pgr(acc_w, acc_s, acc_c)
  out = {'acc_weak': acc_w, 'acc_student': acc_s, 'acc_ceiling': acc_c, 'pgr': p.value,
         'pgr_undefined': p.reason, 'agreement': scores.agreement(student_probs, weak_probs),
         'auroc_student': scores.auroc(student_probs, labels),
         'ece_student': scores.ece(student_probs, labels)}
  out.update(scores.accuracy_by_weak_correctness(student_probs, weak_probs, labels))
  return out


def seed_line(record: dict, losses: list[str]) -> str:
  first = record[losses[0]]
  parts = [f'seed {record["seed"]}: weak {first["acc_weak"]:.4f}  ceiling {first["acc_ceiling"]:.4f}']
  for name in losses:
    r = record[name]
    pgr = 'undefined' if r.get('pgr_undefined') else f'{r["pgr"]:.2f}'
    parts.append(f'{name} {r["acc_student"]:.4f} (PGR {pgr})')
  return '[weak_to_strong] ' + '  '.join(parts)


def summarize(per_seed: list[dict], losses: list[str], config: dict) -> dict:
  """{'per_seed': ..., 'summary': {loss: {metric: {mean, lo, hi, n, n_nan}}}, 'config': ...}."""
  summary = {}
  for name in losses:
    summary[name] = {}
    for m in METRICS:
      s = scores.summarize_seeds([r[name][m] for r in per_seed])
      summary[name][m] = s._asdict()
    undefined = [r[name]['pgr_undefined'] for r in per_seed if r[name]['pgr_undefined']]
    if undefined:
      summary[name]['pgr_undefined'] = undefined
  return {'per_seed': per_seed, 'summary': summary, 'seeds': [r['seed'] for r in per_seed],
          'config': config}


def _fmt(s: dict, pct: bool = True) -> str:
  if s['n'] == 0 or math.isnan(s['mean']):
    return 'undefined'
  k = 100.0 if pct else 1.0
  return f'{k * s["mean"]:.2f} [{k * s["lo"]:.2f}, {k * s["hi"]:.2f}]'


def table(results: dict) -> str:
  """A readable table: accuracy (%) and PGR, mean [95% CI] over seeds, one row per student loss."""
  rows = [('loss', 'weak acc', 'student acc', 'ceiling acc', 'PGR', 'agreement', 'acc | weak wrong')]
  notes = []
  n_seeds = len(results['seeds'])
  for name, s in results['summary'].items():  # the config's student order
    pgr = _fmt(s['pgr'], pct=False)
    if s['pgr'].get('n_nan'):
      pgr += f' ({s["pgr"]["n"]} of {n_seeds} seeds)'
      notes += [f'{name}, seed {r["seed"]}: PGR undefined: {r[name]["pgr_undefined"]}'
                for r in results['per_seed'] if r[name].get('pgr_undefined')]
    rows.append((name, _fmt(s['acc_weak']), _fmt(s['acc_student']), _fmt(s['acc_ceiling']),
                 pgr, _fmt(s['agreement']), _fmt(s['acc_weak_wrong'])))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return (f'weak-to-strong results over {n_seeds} seeds (test set; mean [95% bootstrap CI]):\n'
          + '\n'.join(lines + notes))


def plot(results: dict, workdir: str) -> list[str]:
  """accuracy.png (weak / students / ceiling) and pgr.png (PGR per loss), with 95% CIs."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  summ = results['summary']
  losses = list(summ)
  first = summ[losses[0]]
  names = ['weak'] + [f'student\n{n}' for n in losses] + ['ceiling']
  stats = [first['acc_weak']] + [summ[n]['acc_student'] for n in losses] + [first['acc_ceiling']]
  paths = []
  fig, ax = plt.subplots(figsize=(1.6 * len(names) + 1, 3.6))
  _bars(ax, names, stats, 100.0, ['#999999'] + ['#4477aa'] * len(losses) + ['#228833'])
  lo = min(s['lo'] for s in stats if s['n']) * 100
  hi = max(s['hi'] for s in stats if s['n']) * 100
  ax.set_ylim(max(0, lo - 5), min(100, hi + 3))
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(f'weak-to-strong, {len(results["seeds"])} seeds, 95% CI')
  paths.append(_save(fig, os.path.join(workdir, 'accuracy.png')))
  fig, ax = plt.subplots(figsize=(1.4 * len(losses) + 1.5, 3.4))
  _bars(ax, losses, [summ[n]['pgr'] for n in losses], 1.0, ['#4477aa'] * len(losses))
  ax.axhline(0, color='black', lw=0.8)
  ax.axhline(1, color='#228833', lw=0.8, ls='--')
  ax.set_ylabel('PGR')
  ax.set_title('performance gap recovered, 95% CI')
  paths.append(_save(fig, os.path.join(workdir, 'pgr.png')))
  return paths


def _bars(ax, names, stats, k, colors):
  x = np.arange(len(names))
  means = np.array([k * s['mean'] if s['n'] else np.nan for s in stats])
  err = np.array([[k * (s['mean'] - s['lo']), k * (s['hi'] - s['mean'])] if s['n'] else [0, 0]
                  for s in stats]).T
  ax.bar(x, np.nan_to_num(means), yerr=err, color=colors, capsize=4)
  ax.set_xticks(x, names)


def _save(fig, path):
  tmp = path + '.tmp.png'
  fig.tight_layout()
  fig.savefig(tmp, dpi=120)
  os.replace(tmp, path)
  import matplotlib.pyplot as plt
  plt.close(fig)
  return path
