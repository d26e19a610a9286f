"""Issue 19: the seed intervals quoted in experiments/ re-derived as Student-t 95% intervals.

    python experiments/reintervals.py               # every page
    python experiments/reintervals.py ssl llp       # some pages

Until 2026-12-07 every interval over seeds was a percentile bootstrap of the mean (10,000
resamples, numpy seed 0; `old_bootstrap` below is that code). The pages now quote
`w2s.scores.summarize_seeds` (scipy's t-interval of the mean, none below 3 seeds) and
`w2s.scores.paired_difference` (t-interval of a - b per seed, where two methods share seeds).
This script prints every re-derived figure, each labelled with how it was obtained:

  exact   summarize_seeds / paired_difference on the per-seed values: the committed JSON
          (pixel_debate) or the per-seed values a page lists (ssl, llp, w2s_offline's earlier
          configuration). Test accuracies printed to 0.01 % are snapped to the test set's grid
          (k / n_test) first, and `old_bootstrap` on the values must give back the page's old
          interval, which checks the transcription.
  recon   3 seeds whose values were not kept (w2s_lf, llp's ECE / train accuracy): a percentile
          bootstrap of 3 values is exactly [min, max] (1 resample in 27 is all-min, far above
          2.5 %; checked on llp, whose seeds are listed), so the third value is 3 mean - min - max
          (snapped to the grid), and the t-interval follows exactly. Paired differences need the
          pairing of seeds across metrics: every pairing whose per-seed PGR reproduces the printed
          PGR summary is tried, and where several fit, the range over them is printed.
  approx  (≈) 5 seeds, only the old mean [lo, hi] kept: the percentile bootstrap of a mean is
          about mean +- 1.96 s_pop / sqrt(n) (s_pop the ddof-0 sd), so the t half-width is about
          h * t(0.975, n-1) / 1.96 * sqrt(n / (n-1)) with h the mean of the two bootstrap
          half-widths (x1.58 at n = 5). On the 5-seed pages with per-seed values (pixel_debate,
          ssl) this gives 0.92-1.02 of the exact t width (median 0.98).
"""
import csv
import itertools
import json
import os
import sys

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from w2s.scores import paired_difference, summarize_seeds  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def old_bootstrap(values, level=0.95, num_resamples=10_000, seed=0):
  """The percentile bootstrap w2s.scores.summarize_seeds computed before 2026-12-07."""
  v = np.asarray(values, np.float64)
  means = v[np.random.default_rng(seed).integers(0, len(v), size=(num_resamples, len(v)))].mean(1)
  lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
  return float(v.mean()), float(lo), float(hi)


def approx_t(mean, lo, hi, n):
  """≈ t-interval from a percentile-bootstrap interval of n seeds (see the module docstring)."""
  h = (hi - lo) / 2
  f = stats.t.ppf(0.975, n - 1) / 1.96 * np.sqrt(n / (n - 1))
  return mean, mean - h * f, mean + h * f


def snap(values, n_test, scale=100.0):
  """Accuracies printed to 0.01 (%) -> the exact k / n_test; refuses if the grid is ambiguous."""
  v = np.asarray(values, np.float64)
  k = np.round(v / scale * n_test)
  if not np.allclose(np.round(k / n_test * scale, 2), np.round(v, 2), atol=1e-9):
    raise ValueError(f'{values} are not on the 1/{n_test} grid')
  return k / n_test * scale


def recon3(mean, lo, hi, grid=None):
  """The 3 seed values behind an old 3-seed bootstrap summary (= mean, min, max), sorted.

  grid: test-set size when mean / lo / hi are accuracies in % printed to 0.01 (snapped to
  k / grid); None when they are full precision (report.csv)."""
  if grid is None:
    mid = 3 * mean - lo - hi
    vals = np.array([lo, mid, hi])
    assert lo - 1e-9 <= mid <= hi + 1e-9, (mean, lo, hi)
    return vals
  g = grid / 100.0
  klo, khi, tot = round(lo * g), round(hi * g), round(mean * 3 * g)
  kmid = tot - klo - khi
  assert klo <= kmid <= khi, (mean, lo, hi)
  vals = np.array([klo, kmid, khi]) / g
  m, l, h = old_bootstrap(vals)
  assert (round(m, 2), round(l, 2), round(h, 2)) == (mean, lo, hi), (vals, mean, lo, hi)
  return vals


def f_t(s, scale=1.0, d=2):
  """'mean [lo, hi]' of a SeedSummary (t), or the values with '(n=2: no interval)'."""
  if np.isnan(s.lo):
    return ', '.join(f'{scale * v:.{d}f}' for v in s.values) + f' (n={s.n}: no interval)'
  return f'{scale * s.mean:.{d}f} [{scale * s.lo:.{d}f}, {scale * s.hi:.{d}f}]'


def f_iv(m, lo, hi, scale=1.0, d=2, prefix=''):
  return f'{prefix}{scale * m:.{d}f} [{scale * lo:.{d}f}, {scale * hi:.{d}f}]'


def f_ap(mean, lo, hi, n, scale=1.0, d=2):
  return f_iv(*approx_t(mean, lo, hi, n), scale=scale, d=d, prefix='≈ ')


def excl0(s):
  lo, hi = (s.lo, s.hi) if hasattr(s, 'lo') else s[1:]
  if np.isnan(lo):
    return 'no interval'
  return 'excludes 0' if lo > 0 or hi < 0 else 'INCLUDES 0'


def overlap(a, b):
  (alo, ahi), (blo, bhi) = a, b
  return 'overlap' if max(alo, blo) <= min(ahi, bhi) else 'do not overlap'


# On pixel_debate and ssl, where both can be computed, the ≈ half-width is 0.92-1.02 of the exact
# one: an end of a ≈ interval may be off by about 9% of its half-width.
APPROX_TOL = 0.09


def excl0_ap(iv):
  """excl0 for a ≈ interval (mean, lo, hi), flagged within the approximation's error."""
  m, lo, hi = iv
  margin = lo if m > 0 else -hi  # > 0: excludes 0 by that much; < 0: includes 0
  verdict = 'excludes 0' if margin > 0 else 'INCLUDES 0'
  if abs(margin) < APPROX_TOL * (hi - lo) / 2:
    verdict += f' (borderline: {abs(margin):.3g} from 0, inside the approximation error)'
  return verdict


def overlap_ap(a, b):
  """overlap for two ≈ intervals (mean, lo, hi), with the gap and a 'borderline' flag."""
  (_, alo, ahi), (_, blo, bhi) = a, b
  gap = max(alo, blo) - min(ahi, bhi)  # > 0: apart by that much
  verdict = f'do not overlap (apart by {gap:.3g})' if gap > 0 else f'overlap (by {-gap:.3g})'
  if abs(gap) < APPROX_TOL * ((ahi - alo) + (bhi - blo)) / 2:
    verdict += ' BORDERLINE: inside the approximation error'
  return verdict


def page_text(page):
  with open(os.path.join(HERE, page, 'README.md')) as f:
    return f.read()


def check_listed(page, strings):
  """The transcribed per-seed values must still be on the page (fails loudly if it changed)."""
  text = ' '.join(page_text(page).split())  # line breaks inside a listing do not count
  missing = [s for s in strings if ' '.join(s.split()) not in text]
  if missing:
    raise SystemExit(f'{page}/README.md no longer lists {missing}; update reintervals.py')


def header(title):
  print(f'\n## {title}\n')


# ------------------------------------------------------------------------------------ pixel_debate
def pixel_debate():
  header('pixel_debate (exact: results_greedy.json, results_greedy_vs_lookahead.json per_seed)')
  for name in ('results_greedy.json', 'results_greedy_vs_lookahead.json'):
    with open(os.path.join(HERE, 'pixel_debate', name)) as f:
      res = json.load(f)
    per_seed = res['per_seed']
    col = lambda m: np.array([np.nan if r.get(m) is None else r[m] for r in per_seed], np.float64)
    print(f'### {name} (seeds {res["seeds"]})\n')
    print('| metric | t-interval (%, PGR as a fraction) | old bootstrap | old reproduced |')
    print('|---|---|---|---|')
    for m, old in sorted(res['summary'].items()):
      v = col(m)
      scale = 1.0 if '/pgr/' in m else 100.0
      s = summarize_seeds(v)
      ob = old_bootstrap(v[~np.isnan(v)])
      same = np.allclose(ob, (old['mean'], old['lo'], old['hi']), atol=1e-12)
      d = 2 if scale == 1.0 else 1  # as the page (and pixel_debate_results) prints them
      print(f'| {m} | {f_t(s, scale, d)} | {f_iv(old["mean"], old["lo"], old["hi"], scale, d)} '
            f'| {"yes" if same else "NO"} |')
    print()
    pairs = []
    for k in res['pixels']:
      strategies = res['strategies']
      for st in strategies:
        pairs += [
            (f'k{k}/{st}/student/debate', f'k{k}/student/plain', 100),
            (f'k{k}/{st}/pgr/debate', f'k{k}/pgr/plain', 1),
            (f'k{k}/{st}/labels_B/debate', f'k{k}/labels_B/plain', 100),
            (f'k{k}/{st}/student/debate', f'k{k}/{st}/labels_B/debate', 100),
            ('labels_B/strong_top1', f'k{k}/{st}/labels_B/debate', 100),
            ('student/strong_labels', f'k{k}/{st}/student/debate', 100),
        ]
        if 'all' in res['liars']:
          pairs.append((f'k{k}/{st}/debate_runner_up', f'k{k}/{st}/debate_all', 100))
      pairs.append((f'k{k}/student/plain', f'k{k}/labels_B/plain', 100))
      if 'lookahead' in strategies:
        for m in ('debate_runner_up', 'labels_B/debate', 'student/debate', 'pgr/debate'):
          pairs.append((f'k{k}/lookahead/{m}', f'k{k}/greedy/{m}', 1 if 'pgr' in m else 100))
    if 'k4/greedy/gain_runner_up' in res['summary']:
      pairs.append(('k4/greedy/gain_runner_up', 'k6/greedy/gain_runner_up', 100))
      pairs.append(('k6/greedy/debate_runner_up', 'k4/greedy/debate_runner_up', 100))
    print('| paired difference a - b (same seeds) | t-interval | |')
    print('|---|---|---|')
    seen = set()
    for a, b, scale in pairs:
      if (a, b) in seen:
        continue
      seen.add((a, b))
      s = paired_difference(col(a), col(b))
      print(f'| {a} - {b} | {f_t(s, scale, 3 if scale == 1 else 2)} | {excl0(s)} |')
    print()
  for k in (4, 6):
    a, b = (summarize_seeds(col(f'k{k}/{m}')) for m in ('greedy/pgr/debate', 'pgr/plain'))
    print(f'k = {k}: PGR debate-aided vs plain judge, unpaired t-intervals: '
          f'{overlap((a.lo, a.hi), (b.lo, b.hi))}')


# --------------------------------------------------------------------------------------------- ssl
SSL_N_TEST = 1046
SSL_SEEDS = {  # experiments/ssl/README.md, results table, "per seed (0..4)"
    (40, 'supervised'): '67.59 71.51 65.77 67.59 68.16',
    (40, 'fixmatch'): '94.17 96.37 93.79 87.00 94.55',
    (40, 'mean_teacher'): '94.55 94.65 92.93 84.89 93.02',
    (250, 'supervised'): '93.98 94.17 91.68 94.17 93.40',
    (250, 'fixmatch'): '96.94 96.56 96.18 96.46 95.89',
    (250, 'mean_teacher'): '96.65 96.65 96.08 96.56 96.85',
}


def read_report_csv(page):
  with open(os.path.join(HERE, page, 'report.csv')) as f:
    return list(csv.DictReader(f))


def ssl():
  header('ssl (test acc. exact: the per-seed column; ECE, mask rate, pseudo-label acc. ≈ from '
         'report.csv)')
  check_listed('ssl', SSL_SEEDS.values())
  rows = {(int(r['labels.per_class']) * 10, json.loads(r['model.train.ssl'])['name']): r
          for r in read_report_csv('ssl')}
  acc = {}
  print('| labels | algorithm | test acc. | test ECE | mask rate | pseudo-label acc. '
        '| old test acc. |')
  print('|---|---|---|---|---|---|---|')
  for key, text in SSL_SEEDS.items():
    v = snap([float(x) for x in text.split()], SSL_N_TEST)
    r = rows[key]
    old = tuple(float(r[f'acc_{s}']) * 100 for s in ('mean', 'lo', 'hi'))
    assert np.allclose(old_bootstrap(v), old, atol=1e-9), key
    acc[key] = v
    cells = []
    for m in ('ece', 'mask_rate', 'pseudo_acc'):
      mean, lo, hi = (float(r[f'{m}_{s}']) for s in ('mean', 'lo', 'hi'))
      cells.append('-' if np.isnan(mean) else f_ap(mean, lo, hi, 5, 100))
    print(f'| {key[0]} | {key[1]} | {f_t(summarize_seeds(v))} | ' + ' | '.join(cells)
          + f' | {f_iv(*old)} |')
  print()
  print('| labels | paired difference (same labelled draw per seed) | t-interval | |')
  print('|---|---|---|---|')
  for labels in (40, 250):
    for a, b in (('fixmatch', 'supervised'), ('mean_teacher', 'supervised'),
                 ('fixmatch', 'mean_teacher')):
      s = paired_difference(acc[labels, a], acc[labels, b])
      print(f'| {labels} | {a} - {b} | {f_t(s)} | {excl0(s)} |')
  print()
  for labels in (40, 250):
    sup = summarize_seeds(acc[labels, 'supervised'])
    for a in ('fixmatch', 'mean_teacher'):
      s = summarize_seeds(acc[labels, a])
      print(f'{labels} labels, {a} vs supervised, unpaired t-intervals: '
            f'{overlap((s.lo, s.hi), (sup.lo, sup.hi))}')


# --------------------------------------------------------------------------------------------- llp
LLP_N_TEST = 1046
LLP_SEEDS = {  # experiments/llp/README.md, "Per-seed test accuracy (seeds 0, 1, 2)"
    (1, 'xent'): '97.04, 97.23, 96.94',
    (8, 'easyllp'): '74.67, 77.25, 73.42', (8, 'proportion'): '95.70, 96.27, 90.15',
    (8, 'xent'): '79.83, 71.41, 85.37',
    (32, 'easyllp'): '59.56, 57.46, 59.18', (32, 'proportion'): '8.70, 8.70, 8.70',
    (32, 'xent'): '48.57, 48.76, 19.31',
    (128, 'easyllp'): '39.29, 28.20, 33.17', (128, 'proportion'): '8.70, 8.70, 8.70',
    (128, 'xent'): '17.59, 21.03, 23.04',
}


def llp():
  header('llp (test acc. exact: the per-seed table; train acc. and ECE recon from report.csv)')
  check_listed('llp', LLP_SEEDS.values())
  rows = {(int(r['bags.size']), json.loads(r['model.loss'])['name']): r
          for r in read_report_csv('llp')}
  acc = {}
  print('| k | loss | test acc. | train acc. (hidden labels) | test ECE '
        '| old test acc. (= [min, max]) |')
  print('|---|---|---|---|---|---|')
  for key, text in LLP_SEEDS.items():
    v = snap([float(x) for x in text.split(', ')], LLP_N_TEST)
    r = rows[key]
    old = tuple(float(r[f'acc_{s}']) * 100 for s in ('mean', 'lo', 'hi'))
    assert np.allclose(old_bootstrap(v), old, atol=1e-9), key
    assert np.allclose(recon3(*old), np.sort(v), atol=1e-9), key  # recon3 checked on known seeds
    acc[key] = v
    cells = []
    for m in ('train_acc', 'ece'):
      vals = recon3(*(float(r[f'{m}_{s}']) * 100 for s in ('mean', 'lo', 'hi')))
      assert np.allclose(old_bootstrap(vals)[1:], (vals[0], vals[2]), atol=1e-9)
      cells.append(f_t(summarize_seeds(vals)))
    print(f'| {key[0]} | {key[1]} | {f_t(summarize_seeds(v))} | ' + ' | '.join(cells)
          + f' | {f_iv(*old)} |')
  print()
  print('| k | paired difference (same bags per seed) | t-interval | |')
  print('|---|---|---|---|')
  for k, a, b in ((8, 'proportion', 'xent'), (8, 'proportion', 'easyllp'), (8, 'xent', 'easyllp'),
                  (32, 'easyllp', 'xent'), (32, 'easyllp', 'proportion'),
                  (128, 'easyllp', 'xent'), (128, 'easyllp', 'proportion'),
                  (128, 'xent', 'proportion')):
    s = paired_difference(acc[k, a], acc[k, b])
    print(f'| {k} | {a} - {b} | {f_t(s)} | {excl0(s)} |')
  s = paired_difference(acc[1, 'xent'], acc[8, 'proportion'])
  print(f'| 1 vs 8 | supervised - proportion (k = 8) | {f_t(s)} | {excl0(s)} |')
  print()
  p8 = summarize_seeds(acc[8, 'proportion'])
  for b in ('xent', 'easyllp'):
    s = summarize_seeds(acc[8, b])
    print(f'k = 8, proportion vs {b}, unpaired t-intervals: '
          f'{overlap((p8.lo, p8.hi), (s.lo, s.hi))}')


# ----------------------------------------------------------------------------------- self_training
def self_training():
  header('self_training, MNIST (≈ from report.csv, 5 seeds)')
  print('| labels | policy | supervised only | after self-training | gain (paired) | '
        'pseudo-label acc. | coverage |')
  print('|---|---|---|---|---|---|---|')
  ivs = {}
  for r in read_report_csv('self_training'):
    n = int(r['seeds'])
    labels = int(r['labels.per_class']) * 10
    pol = json.loads(r['pseudo.select'])['name']
    cells = []
    for m in ('acc_supervised', 'acc_final', 'gain', 'pseudo_accuracy', 'pseudo_coverage'):
      mean, lo, hi = (100 * float(r[f'{m}_{s}']) for s in ('mean', 'lo', 'hi'))  # in %
      ivs[labels, pol, m] = approx_t(mean, lo, hi, n)
      cells.append(f_ap(mean, lo, hi, n))
    print(f'| {labels} | {pol} | ' + ' | '.join(cells) + ' |')
  print()
  for labels in (40, 250):
    for pol in ('threshold', 'curriculum'):
      sup, fin, gain = (ivs[labels, pol, m] for m in ('acc_supervised', 'acc_final', 'gain'))
      print(f'{labels} labels, {pol}: paired gain {excl0_ap(gain)}; unpaired accuracies '
            f'{overlap_ap(sup, fin)}')
  header('self_training, Rotten Tomatoes 50 labels (≈ from the page, 5 seeds)')
  rt = {'supervised only': (63.19, 61.58, 64.78),
        'threshold 0.95, after 3 rounds': (63.71, 61.90, 65.41),
        'threshold 0.95, gain (paired)': (0.52, -0.45, 1.48),
        'top-k 200 / class, after 3 rounds': (64.52, 61.98, 67.07),
        'top-k 200 / class, gain (paired)': (1.33, 0.25, 2.41)}
  for name, (m, lo, hi) in rt.items():
    extra = f' ({excl0_ap(approx_t(m, lo, hi, 5))})' if 'gain' in name else ''
    print(f'- {name}: {f_ap(m, lo, hi, 5)}{extra}')


# ------------------------------------------------------------------------------------- w2s_scaling
def w2s_scaling():
  header('w2s_scaling (≈ from report.csv, 5 seeds per point)')
  rows = read_report_csv('w2s_scaling')
  weak, ceiling, table = {}, {}, {}
  for r in rows:
    n = int(r['seeds'])
    mw, layers, loss = int(r['splits.max_weak']), int(r['strong.model.layers']), r['loss']
    get = lambda m: approx_t(*((1.0 if m == 'pgr' else 100.0) * float(r[f'{m}_{s}'])
                               for s in ('mean', 'lo', 'hi')), n)  # accuracies in %
    weak[mw], ceiling[layers] = get('acc_weak'), get('acc_ceiling')
    table[mw, layers, loss] = (get('acc_student'), get('pgr'))
  print('weak: ' + '; '.join(f'{mw}: {f_iv(*v, prefix="≈ ")}' for mw, v in weak.items()))
  print('ceiling: ' + '; '.join(f'{l} layers: {f_iv(*v, prefix="≈ ")}'
                                for l, v in ceiling.items()))
  print()
  print('| max_weak | layers | xent student % | xent PGR | logconf student % | logconf PGR |')
  print('|---|---|---|---|---|---|')
  for mw in sorted(weak):
    for layers in sorted(ceiling):
      (xs, xp), (ls, lp) = table[mw, layers, 'xent'], table[mw, layers, 'logconf']
      print(f'| {mw} | {layers} | {f_iv(*xs, prefix="≈ ")} | {f_iv(*xp, prefix="≈ ")} '
            f'| {f_iv(*ls, prefix="≈ ")} | {f_iv(*lp, prefix="≈ ")} |')
  print()
  print('1 layer, logconf PGR below 0? / logconf vs xent PGR intervals (unpaired, ≈):')
  for mw in sorted(weak):
    lp, xp = table[mw, 1, 'logconf'][1], table[mw, 1, 'xent'][1]
    print(f'  {mw}: logconf {f_iv(*lp, prefix="≈ ")} {excl0_ap(lp)}; '
          f'xent {f_iv(*xp, prefix="≈ ")}; '
          f'{overlap_ap(lp, xp)}')
  print('1 layer, logconf vs xent student accuracy (unpaired, ≈; same weak and ceiling):')
  for mw in sorted(weak):
    ls, xs = table[mw, 1, 'logconf'][0], table[mw, 1, 'xent'][0]
    print(f'  {mw}: logconf {f_iv(*ls, prefix="≈ ")}; xent {f_iv(*xs, prefix="≈ ")}; '
          f'{overlap_ap(ls, xs)}')
  print('6 layers, logconf vs xent PGR (unpaired, ≈):')
  for mw in sorted(weak):
    lp, xp = table[mw, 6, 'logconf'][1], table[mw, 6, 'xent'][1]
    print(f'  {mw}: PGR {overlap_ap(lp, xp)}; student acc. '
          f'{overlap_ap(table[mw, 6, "logconf"][0], table[mw, 6, "xent"][0])}; '
          f'logconf PGR {excl0_ap(lp)}')
  print('logconf PGR, 1 layer vs 6 layers (unpaired, ≈):')
  for mw in sorted(weak):
    a, b = table[mw, 1, 'logconf'][1], table[mw, 6, 'logconf'][1]
    print(f'  {mw}: {overlap_ap(a, b)}')
  print('6 layers, logconf PGR at each weak strength vs the peak (unpaired, ≈):')
  peak = max(sorted(weak), key=lambda mw: table[mw, 6, 'logconf'][1][0])
  for mw in sorted(weak):
    a, b = table[mw, 6, 'logconf'][1], table[peak, 6, 'logconf'][1]
    print(f'  {mw} vs {peak}: {overlap_ap(a, b)}')


# ------------------------------------------------------------------------------------- w2s_offline
OFFLINE_SEEDS = ('68.1/76.7/71.9/73.1, 68.4/76.1/72.4/74.9, 67.4/76.2/72.1/74.6, '
                 '67.6/76.0/72.4/74.1, 69.2/76.0/70.9/72.5')  # weak / ceiling / xent / logconf


def w2s_offline():
  header('w2s_offline')
  print('### The configuration as shipped (≈ from the bootstrap width, 5 seeds; superseded by the '
        'exact intervals of the main job rerun on 2026-12-07, on the page)\n')
  # = the (1,000 labels, 6 layers) point of w2s_scaling, whose report.csv has the full precision
  rows = {r['loss']: r for r in read_report_csv('w2s_scaling')
          if (r['splits.max_weak'], r['strong.model.layers']) == ('1000', '6')}
  get = lambda loss, m, k=100.0: tuple(k * float(rows[loss][f'{m}_{s}'])
                                       for s in ('mean', 'lo', 'hi'))
  cur = {'weak': get('xent', 'acc_weak'), 'ceiling': get('xent', 'acc_ceiling'),
         'xent student': get('xent', 'acc_student'),
         'logconf student': get('logconf', 'acc_student'),
         'xent PGR': get('xent', 'pgr', 1.0), 'logconf PGR': get('logconf', 'pgr', 1.0),
         "select='last' xent PGR": (0.07, -0.04, 0.22),  # from the page only
         "select='last' logconf PGR": (0.46, 0.38, 0.54)}
  page = {'weak': (69.02, 68.76, 69.27), 'ceiling': (76.15, 75.80, 76.48),
          'xent student': (69.60, 68.65, 70.68), 'logconf student': (72.35, 71.90, 72.81),
          'xent PGR': (0.08, -0.07, 0.23), 'logconf PGR': (0.47, 0.39, 0.55)}
  for k, v in page.items():  # the page's figures are that point's, rounded
    assert np.allclose(np.round(cur[k], 2), v), (k, cur[k], v)
  ap = {k: approx_t(*v, 5) for k, v in cur.items()}
  for k, v in cur.items():
    print(f'- {k}: {f_ap(*v, 5)}')
  print(f'- xent vs logconf student acc.: {overlap_ap(ap["xent student"], ap["logconf student"])}'
        f'; PGR: {overlap_ap(ap["xent PGR"], ap["logconf PGR"])}; '
        f'xent PGR {excl0_ap(ap["xent PGR"])}, logconf PGR {excl0_ap(ap["logconf PGR"])}')
  print('  (no per-seed values kept: no paired logconf - xent interval)')

  print('\n### The earlier configuration (from the per-seed values as printed, rounded to 0.1)\n')
  check_listed('w2s_offline', [OFFLINE_SEEDS])
  v = np.array([[float(x) for x in s.split('/')] for s in OFFLINE_SEEDS.split(', ')])
  weak, ceil, xent, logc = v.T
  pgr = lambda s: (s - weak) / (ceil - weak)
  old = {'weak': (68.12, 67.61, 68.69), 'ceiling': (76.18, 76.01, 76.42),
         'xent student': (71.93, 71.42, 72.31), 'logconf student': (73.82, 73.01, 74.61),
         'xent PGR': (0.46, 0.36, 0.55), 'logconf PGR': (0.70, 0.57, 0.82)}
  vals = {'weak': weak, 'ceiling': ceil, 'xent student': xent, 'logconf student': logc,
          'xent PGR': pgr(xent), 'logconf PGR': pgr(logc)}
  for k, x in vals.items():
    d = 3 if 'PGR' in k else 2
    print(f'- {k}: {f_t(summarize_seeds(x), d=d)} (old, from the unrounded values: '
          f'{f_iv(*old[k])}; old bootstrap of the rounded values: {f_iv(*old_bootstrap(x))})')
  for a, b in (('logconf student', 'xent student'), ('logconf PGR', 'xent PGR'),
               ('xent student', 'weak'), ('logconf student', 'weak')):
    s = paired_difference(vals[a], vals[b])
    print(f'- paired {a} - {b}: {f_t(s, d=3 if "PGR" in a else 2)} ({excl0(s)})')

  print('\n### All student losses, ensemble, ELR (earlier configuration; ≈, 5 seeds)\n')
  rows = {
      'logconf': ((73.82, 73.01, 74.61), (0.70, 0.57, 0.82)),
      'entropy': ((72.02, 71.49, 72.38), (0.48, 0.36, 0.55)),
      'window': ((71.95, 71.38, 72.28), (0.47, 0.35, 0.55)),
      'xent': ((71.93, 71.42, 72.31), (0.46, 0.36, 0.55)),
      'bootstrap': ((71.93, 71.42, 72.31), (0.46, 0.36, 0.55)),
      'product': ((71.57, 70.86, 72.28), (0.42, 0.29, 0.54)),
      'gce': ((70.45, 69.72, 71.15), (0.29, 0.21, 0.38)),
      'adaptconf': ((70.39, 69.74, 70.90), (0.28, 0.23, 0.34)),
      'ensemble: weak': ((67.99, 67.42, 68.53), None),
      'ensemble: logconf': ((73.36, 72.83, 73.87), (0.65, 0.56, 0.74)),
      'ensemble: reliability': ((70.95, 70.39, 71.48), (0.35, 0.26, 0.46)),
      'ensemble: xent': ((70.90, 70.30, 71.50), (0.35, 0.25, 0.46)),
      'elr': ((67.34, 66.29, 68.34), (-0.10, -0.21, 0.03)),
  }
  ap = {}
  for k, (acc, p) in rows.items():
    ap[k] = (approx_t(*acc, 5), p and approx_t(*p, 5))
    print(f'- {k}: student {f_ap(*acc, 5)}' + (f', PGR {f_ap(*p, 5)}' if p else ''))
  print(f'- logconf vs entropy (the next best), student acc.: '
        f'{overlap_ap(ap["logconf"][0], ap["entropy"][0])}; PGR: '
        f'{overlap_ap(ap["logconf"][1], ap["entropy"][1])}')
  print(f'- ensemble logconf vs reliability / xent, student acc.: '
        f'{overlap_ap(ap["ensemble: logconf"][0], ap["ensemble: reliability"][0])}; PGR: '
        f'{overlap_ap(ap["ensemble: logconf"][1], ap["ensemble: reliability"][1])}')
  print(f'- ELR PGR {excl0_ap(ap["elr"][1])}; ELR student vs weak 68.12 [67.61, 68.69] '
        f'(≈ {f_iv(*approx_t(68.12, 67.61, 68.69, 5))}): '
        f'{overlap_ap(ap["elr"][0], approx_t(68.12, 67.61, 68.69, 5))}')


# ------------------------------------------------------------------------------------------ w2s_lf
LF_N_TEST = 2600
LF_CEILING = (76.08, 75.46, 76.62)
# experiments/w2s_lf/README.md, the old 3-seed bootstrap table (kept there for the record):
# weak, xent student, xent PGR, logconf student, logconf PGR
LF_ROWS = {
    'majority': ((67.65, 67.65, 67.65), (69.29, 68.73, 69.62), (0.20, 0.13, 0.24),
                 (71.81, 71.15, 72.19), (0.49, 0.41, 0.57)),
    'weighted': ((66.76, 66.58, 66.85), (66.13, 65.38, 66.62), (-0.07, -0.16, -0.02),
                 (70.73, 69.88, 71.23), (0.43, 0.33, 0.51)),
    'dawid_skene': ((66.04, 66.04, 66.04), (63.96, 63.46, 64.42), (-0.21, -0.25, -0.17),
                    (69.29, 68.12, 70.15), (0.33, 0.21, 0.44)),
    'dawid_skene, abstain=model': ((60.17, 60.15, 60.19), (53.03, 52.73, 53.23),
                                   (-0.45, -0.46, -0.43), (57.22, 56.69, 57.69),
                                   (-0.19, -0.21, -0.15)),
}


def _fits(p, target):
  m, lo, hi = target
  return (round(p.mean(), 2), round(p.min(), 2), round(p.max(), 2)) == (m, lo, hi)


def w2s_lf():
  header('w2s_lf (recon: 3 seeds, from the old [min, max] and mean; test set 2,600)')
  ceil = recon3(*LF_CEILING, grid=LF_N_TEST)
  print(f'ceiling: {f_t(summarize_seeds(ceil))}  (seed values {np.round(ceil, 2).tolist()})\n')
  print('| label model | weak | xent student | xent PGR | logconf student | logconf PGR | '
        'pairings that fit |')
  print('|---|---|---|---|---|---|---|')
  notes, fits = [], {}
  pg = lambda s, pw: (s - pw) / (ceil - pw)
  for name, (w, x, px, l, pl) in LF_ROWS.items():
    wv, xv, lv = (recon3(*t, grid=LF_N_TEST) for t in (w, x, l))
    # per-seed (weak, xent, logconf), aligned with the ceiling's seeds (the label models share
    # the ceiling stages, so its 3 distinct values name the seeds), reproducing both PGR summaries
    sols = []
    for pw in sorted(set(itertools.permutations(wv))):
      pw = np.array(pw)
      for pxv in sorted(set(itertools.permutations(xv))):
        pxv = np.array(pxv)
        if not _fits(pg(pxv, pw), px):
          continue
        for plv in sorted(set(itertools.permutations(lv))):
          plv = np.array(plv)
          if _fits(pg(plv, pw), pl):
            sols.append((pw, pxv, plv))
    assert sols, name
    fits[name] = sols

    def span(fn, sols=sols):
      """fn's text over the alignments that fit; for SeedSummaries, their hull ('widest')."""
      res = [fn(*s) for s in sols]
      if hasattr(res[0], 'lo'):
        hull = (res[0].mean, min(r.lo for r in res), max(r.hi for r in res))
        outs = sorted({f_t(r) for r in res})
        return (outs[0] if len(outs) == 1 else
                f_iv(*hull) + f' (widest of {len(outs)}: ' + ' or '.join(outs) + ')')
      outs = sorted(set(res))
      return outs[0] if len(outs) == 1 else ' or '.join(outs)

    print(f'| {name} | {f_t(summarize_seeds(wv))} | {f_t(summarize_seeds(xv))} | '
          f'{span(lambda pw, a, b: summarize_seeds(pg(a, pw)))} | '
          f'{f_t(summarize_seeds(lv))} | {span(lambda pw, a, b: summarize_seeds(pg(b, pw)))} '
          f'| {len(sols)} |')
    for label, fn in (
        ('paired logconf - xent student', lambda pw, a, b: paired_difference(b, a)),
        ('paired xent student - weak', lambda pw, a, b: paired_difference(a, pw)),
        ('paired logconf student - weak', lambda pw, a, b: paired_difference(b, pw)),
        ('xent PGR', lambda pw, a, b: excl0(summarize_seeds(pg(a, pw)))),
        ('logconf PGR', lambda pw, a, b: excl0(summarize_seeds(pg(b, pw)))),
        ('paired xent - weak', lambda pw, a, b: excl0(paired_difference(a, pw))),
        ('paired logconf - weak', lambda pw, a, b: excl0(paired_difference(b, pw)))):
      notes.append(f'- {name}: {label}: {span(fn)}')
  print()
  print('\n'.join(notes))
  print()
  for other in ('weighted', 'dawid_skene'):
    for i, loss in ((0, 'weak'), (1, 'xent student'), (2, 'logconf student')):
      res = [paired_difference(a[i], b[i]) for a in fits['majority'] for b in fits[other]]
      outs = sorted({f_t(r) for r in res})
      hull = (res[0].mean, min(r.lo for r in res), max(r.hi for r in res))
      print(f'- paired majority - {other}, {loss}: {f_iv(*hull)} ({excl0(hull)}'
            + (f'; widest of {" or ".join(outs)})' if len(outs) > 1 else ')'))


# ------------------------------------------------------------------------------ experiments README
def overview():
  header('experiments/README.md: its figures come from w2s_offline (shipped configuration: exact, '
         'from the main job rerun of 2026-12-07) and ssl (exact); see those sections')


PAGES = {'pixel_debate': pixel_debate, 'ssl': ssl, 'llp': llp, 'self_training': self_training,
         'w2s_scaling': w2s_scaling, 'w2s_offline': w2s_offline, 'w2s_lf': w2s_lf,
         'overview': overview}


def main(argv):
  names = argv or list(PAGES)
  unknown = [n for n in names if n not in PAGES]
  if unknown:
    raise SystemExit(f'unknown page(s) {unknown}; pages: {", ".join(PAGES)}')
  print('# Seed intervals re-derived as Student-t 95% intervals (issue 19, 2026-12-07)')
  print('exact / recon / ≈ as in the docstring of experiments/reintervals.py')
  for n in names:
    PAGES[n]()


if __name__ == '__main__':
  main(sys.argv[1:])
