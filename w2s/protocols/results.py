"""Scores per seed, summaries over seeds (mean and Student-t 95% interval; paired differences
between student losses, which share seeds), the printed table and plots."""
import os

import numpy as np

from w2s import scores

# per-seed, per-student-loss numbers that get a mean and CI over seeds
METRICS = ('acc_weak', 'acc_student', 'acc_ceiling', 'pgr', 'agreement', 'acc_weak_wrong',
           'acc_weak_right', 'auroc_student', 'ece_student')
# metrics whose loss-vs-loss paired difference is reported
PAIRED_METRICS = ('acc_student', 'pgr')
SMOKE = 'SMOKE TEST (runlocal: tiny splits and models, not a result) - '  # title prefix


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
  """{'per_seed', 'summary': {loss: {metric: {mean, lo, hi, n, n_nan, values, interval}}},
  'paired': {'b - a': {metric: ...}}, 'seeds', 'config'}.

  'paired' holds, for every student loss b after the first (a), the per-seed difference b - a of
  student accuracy and PGR: the students share seeds, splits and weak labels, so this is the
  interval to quote when saying one loss beats another."""
  summary = {}
  for name in losses:
    summary[name] = {}
    for m in METRICS:
      s = scores.summarize_seeds([r[name][m] for r in per_seed])
      summary[name][m] = s._asdict()
    undefined = [r[name]['pgr_undefined'] for r in per_seed if r[name]['pgr_undefined']]
    if undefined:
      summary[name]['pgr_undefined'] = undefined
  paired = {f'{b} - {losses[0]}': {m: scores.paired_difference(
      [r[b][m] for r in per_seed], [r[losses[0]][m] for r in per_seed])._asdict()
      for m in PAIRED_METRICS} for b in losses[1:]}
  return {'per_seed': per_seed, 'summary': summary, 'paired': paired,
          'seeds': [r['seed'] for r in per_seed], 'config': config}


def smoke_note(config) -> str:
  """'SMOKE TEST (runlocal) - ' for a config made by a `runlocal` preset, else ''."""
  return SMOKE if (config or {}).get('smoke') else ''


def interval_note(n_seeds: int) -> str:
  """How the printed intervals were made, or that there are none."""
  if n_seeds < scores.MIN_SEEDS_FOR_INTERVAL:
    return f'n={n_seeds} seed{"s" * (n_seeds != 1)}: no interval, the values per seed'
  return f'{n_seeds} seeds, mean [95% t-interval]'


def table(results: dict) -> str:
  """A readable table: accuracy (%) and PGR, mean [95% t-interval] over seeds, one row per student
  loss, then the paired differences between losses."""
  fmt = scores.fmt_summary
  rows = [('loss', 'weak acc', 'student acc', 'ceiling acc', 'PGR', 'agreement',
           'acc | weak wrong')]
  notes = []
  n_seeds = len(results['seeds'])
  for name, s in results['summary'].items():  # the config's student order
    pgr = fmt(s['pgr'])
    if s['pgr'].get('n_nan'):
      pgr += f' ({s["pgr"]["n"]} of {n_seeds} seeds)'
      notes += [f'{name}, seed {r["seed"]}: PGR undefined: {r[name]["pgr_undefined"]}'
                for r in results['per_seed'] if r[name].get('pgr_undefined')]
    rows.append((name, fmt(s['acc_weak'], 100), fmt(s['acc_student'], 100),
                 fmt(s['acc_ceiling'], 100), pgr, fmt(s['agreement'], 100),
                 fmt(s['acc_weak_wrong'], 100)))
  for pair, d in results.get('paired', {}).items():
    notes.append(f'paired difference {pair} (same seeds): student acc '
                 f'{fmt(d["acc_student"], 100)} points, PGR {fmt(d["pgr"])}')
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return (f'{smoke_note(results.get("config"))}weak-to-strong results, test set, '
          f'{interval_note(n_seeds)}:\n' + '\n'.join(lines + notes))


def plot(results: dict, workdir: str) -> list[str]:
  """accuracy.png (weak / students / ceiling) and pgr.png (PGR per loss), with 95% t-intervals
  (none below 3 seeds) and each seed's value."""
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
  span = [v for s in stats if s['n'] for v in (s['lo'], s['hi'], *s.get('values', [s['mean']]))
          if v is not None]
  lo, hi = 100 * np.nanmin(span), 100 * np.nanmax(span)
  ax.set_ylim(max(0, lo - 5), min(100, hi + 3))
  ax.set_ylabel('test accuracy (%)')
  note = smoke_note(results.get('config')) + interval_note(len(results['seeds']))
  ax.set_title(f'weak-to-strong test accuracy\n{note}', fontsize=9)
  paths.append(_save(fig, os.path.join(workdir, 'accuracy.png')))
  fig, ax = plt.subplots(figsize=(1.4 * len(losses) + 1.5, 3.4))
  _bars(ax, losses, [summ[n]['pgr'] for n in losses], 1.0, ['#4477aa'] * len(losses))
  ax.axhline(0, color='black', lw=0.8)
  ax.axhline(1, color='#228833', lw=0.8, ls='--')
  ax.set_ylabel('PGR')
  ax.set_title(f'performance gap recovered\n{note}', fontsize=9)
  paths.append(_save(fig, os.path.join(workdir, 'pgr.png')))
  return paths


def _bars(ax, names, stats, k, colors):
  """Bars at the means, t-interval error bars where there is an interval, and each seed's value
  as a dot (so 1-2 seeds show as what they are)."""
  x = np.arange(len(names))
  means = np.array([k * s['mean'] if s['n'] else np.nan for s in stats])
  ax.bar(x, np.nan_to_num(means), color=colors)
  for xi, s in zip(x, stats):
    if s['n'] and s['lo'] is not None and not np.isnan(s['lo']):  # null in a read-back file
      err = [[k * (s['mean'] - s['lo'])], [k * (s['hi'] - s['mean'])]]
      ax.errorbar([xi], [k * s['mean']], yerr=err, color='black', capsize=4)
    vals = [k * v for v in s.get('values', [])]
    ax.plot(np.full(len(vals), xi) + np.linspace(-0.15, 0.15, len(vals)), vals, 'o', ms=3,
            color='black', alpha=0.6)
  ax.set_xticks(x, names)


def _save(fig, path):
  tmp = path + '.tmp.png'
  fig.tight_layout()
  fig.savefig(tmp, dpi=120)
  os.replace(tmp, path)
  import matplotlib.pyplot as plt
  plt.close(fig)
  return path
