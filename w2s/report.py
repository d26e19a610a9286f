"""Reports across runs: `python -m w2s.report DIR... [--out DIR] [--x KEY] [--group KEY]`.

Reads the `results.json` of many runs (weak-to-strong, self-training, semi-supervised and
label-proportion studies; a sweep directory from `w2s.sweep`, single run directories, or any
directory holding them) and writes, into `--out` (default: the first DIR, or `DIR/report/` when
the first DIR is itself a run: a report never writes into a run's own files):

  report.csv / report.md   one row per run and student loss: the swept values, test accuracy of
                           weak / student / ceiling and PGR, each mean [95% t-interval] over
                           seeds (no interval below 3 seeds: the values), with how many seeds
                           each number has; smoke runs (`runlocal`) are marked
  accuracy.png             test accuracy vs the x axis (e.g. strong-model size), one panel per
                           group (e.g. weak-supervisor strength): weak, ceiling, each student
  pgr.png                  PGR vs the x axis, one panel per student loss, one line per group,
                           CIs as bands (the form of Burns et al. 2023, Figs. 3-4)
  curves.png               training loss of each stage kind over steps (seed 0), one line per
                           run, from the stages' metrics.jsonl

The axes come from the sweep's `sweep.json`: by default the last swept key with numeric values
is x and the other swept keys form the groups.
"""
import argparse
import csv
import json
import os
import sys

import numpy as np

from w2s import scores
from w2s.errors import UserError
from w2s.protocols import results as results_lib

STATS = ('acc_weak', 'acc_student', 'acc_ceiling', 'pgr')
KINDS = ('weak_to_strong', 'self_training', 'semi_supervised', 'label_proportions')


def find_runs(dirs: list[str]) -> list[dict]:
  """[{name, dir, overrides, results}] of every finished run under `dirs` (sweep order first)."""
  runs = []
  for d in dirs:
    if not os.path.isdir(d):
      raise UserError(f'{d} is not a directory')
    sweep = os.path.join(d, 'sweep.json')
    if os.path.exists(sweep):
      meta = _read_json(sweep, 'a sweep index (rerun the sweep command to rewrite it)')
      if not isinstance(meta.get('points'), list) or not isinstance(meta.get('axes'), list):
        raise UserError(f'{sweep} is not a sweep index (no points / axes list); rerun the sweep '
                        'command to rewrite it')
      for p in meta['points']:
        path = os.path.join(d, p['name'], 'results.json')
        if os.path.exists(path):
          runs.append(_run(p['name'], os.path.dirname(path), p['overrides'], meta['axes']))
        else:
          print(f'[report] {p["name"]}: no results.json yet, left out', file=sys.stderr)
      continue
    for root, _, files in sorted(os.walk(d)):
      if 'results.json' in files and os.sep + 'stages' + os.sep not in root + os.sep:
        runs.append(_run(os.path.relpath(root, d) if root != d else os.path.basename(
            os.path.abspath(d)), root, {}, []))
  runs = [r for r in runs if 'summary' in r['results']]  # protocols with seeds and CIs
  if not runs:
    raise UserError(f'no results.json with a summary over seeds under {", ".join(dirs)}')
  for r in runs:
    if not isinstance(r['results']['summary'], dict) or not r['results']['summary']:
      raise UserError(f'{os.path.join(r["dir"], "results.json")}: "summary" is not a mapping of '
                      'statistics; the file is damaged or not written by w2s (rerun that run)')
  for r in [r for r in runs if kind(r) not in KINDS]:
    print(f'[report] {r["name"]}: a {kind(r)} run has tables of its own (its results.json and '
          'printed table), left out', file=sys.stderr)
  runs = [r for r in runs if kind(r) in KINDS]
  if not runs:
    raise UserError(f'no run of a kind this report tabulates ({", ".join(KINDS)}) under '
                    f'{", ".join(dirs)}')
  return runs


def kind(run: dict) -> str:
  """'weak_to_strong' | 'self_training' | 'semi_supervised' | 'label_proportions' (KINDS), or
  another protocol's name, from the protocol named in the run's config and the summary's form."""
  summ = run['results']['summary']
  protocol = (run['results'].get('config') or {}).get('protocol') or {}
  name = protocol.get('name') if isinstance(protocol, dict) else None
  if name in ('label_proportions', 'pixel_debate'):  # others are told apart by their summary's
    return name                                     # form (text_debate's is weak-to-strong's)
  if 'rounds' in summ:
    return 'self_training'
  if 'acc' in summ:
    return 'semi_supervised'
  return 'weak_to_strong'


def _stats_of(run: dict) -> list[tuple[str, dict, dict]]:
  """[(loss or '', {stat name: {mean, lo, hi, n}}, extras)] of one run."""
  summ = run['results']['summary']
  k = kind(run)
  need = {'weak_to_strong': STATS, 'label_proportions': ('acc', 'ece', 'train_acc'),
          'semi_supervised': ('acc', 'ece'), 'self_training': ('supervised', 'final', 'gain')}[k]
  entries = [v for v in summ.values() if isinstance(v, dict)] if k == 'weak_to_strong' else [summ]
  if not entries or any(not isinstance(e.get(m), dict) for e in entries for m in need):
    raise UserError(f'{os.path.join(run["dir"], "results.json")}: its summary lacks '
                    f'{", ".join(need)} of a {k} run; is it a w2s results file of a finished run?')
  if k == 'weak_to_strong':
    return [(loss, {m: summ[loss][m] for m in STATS}, {}) for loss in summ]
  if k == 'self_training':
    last = summ['rounds'][-1]
    stats = {'acc_supervised': summ['supervised'], 'acc_final': summ['final'],
             'gain': summ['gain']}
    stats.update({f'pseudo_{m}': last['pseudo'][m] for m in ('accuracy', 'coverage')}
                 if 'pseudo' in last else {})
    return [('', stats, {'rounds': last['round']})]
  if k == 'label_proportions':  # test accuracy / ECE, and accuracy on the hidden train labels
    return [('', {m: summ[m] for m in ('acc', 'ece', 'train_acc')}, {})]
  return [('', {m: summ[m] for m in ('acc', 'ece', 'mask_rate', 'pseudo_acc')}, {})]


def _read_json(path: str, what: str) -> dict:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError; so are bad bytes
    raise UserError(f'{path} is unreadable ({type(e).__name__}: {e}); it should be {what}') from e
  if not isinstance(data, dict):
    raise UserError(f'{path} holds a {type(data).__name__}, not a mapping; it should be {what}')
  return data


def _run(name, path, overrides, axes) -> dict:
  results = _read_json(os.path.join(path, 'results.json'),
                       "a run's results (rerun that run's command: it finishes from its stages)")
  return {'name': name, 'dir': path, 'overrides': overrides, 'axes': axes, 'results': results}


def rows(runs: list[dict]) -> list[dict]:
  """One flat row per run (and student loss, for weak-to-strong runs): swept values, the kind of
  run, 'smoke' for a runlocal run, then each statistic's mean / lo / hi and n (the seeds it has a
  value for, of 'seeds'); lo and hi are empty (NaN) below 3 seeds."""
  out = []
  for r in runs:
    for loss, stats, extras in _stats_of(r):
      row = {'run': r['name'], **{k: _cell(v) for k, v in r['overrides'].items()}, **extras,
             **({'loss': loss} if loss else {}), 'kind': kind(r),
             'smoke': bool((r['results'].get('config') or {}).get('smoke')),
             'seeds': len(r['results'].get('seeds', []))}
      for m, s in stats.items():
        for part in ('mean', 'lo', 'hi'):  # results.json stores NaN as null
          row[f'{m}_{part}'] = s[part] if s['n'] and s[part] is not None else float('nan')
        row[f'{m}_n'] = s['n']
        row[f'{m}_values'] = json.dumps([round(v, 6) for v in s.get('values', [])])
        if 'interval' not in s and s['n'] >= scores.MIN_SEEDS_FOR_INTERVAL:
          row['legacy'] = True  # written before t-intervals: lo / hi are a bootstrap's
      out.append(row)
  return out


def _cell(v):
  return v if isinstance(v, (int, float, str)) else json.dumps(v, default=str)


def write_tables(table: list[dict], out: str) -> list[str]:
  keys = list(dict.fromkeys(k for row in table for k in row))
  csv_path = os.path.join(out, 'report.csv')
  with open(csv_path + '.tmp', 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(table)
  os.replace(csv_path + '.tmp', csv_path)
  stats = list(dict.fromkeys(k[:-5] for k in keys if k.endswith('_mean')))
  plain = [k for k in keys if not k.endswith(('_mean', '_lo', '_hi', '_n', '_values'))
           and k not in ('smoke', 'legacy')]
  plain += ['smoke'] if any(row['smoke'] for row in table) else []
  head = plain + [m + (' %' if _scale(m) == 100 else '') for m in stats]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in table:
    cells = [('smoke test' if row[a] else '') if a == 'smoke' else str(row.get(a, ''))
             for a in plain] + [_md_cell(row, m) for m in stats]
    lines.append('| ' + ' | '.join(cells) + ' |')
  md_path = os.path.join(out, 'report.md')
  notes = []
  if any(row['smoke'] for row in table):
    notes.append('Rows marked "smoke test" come from `runlocal` runs (tiny splits and models): '
                 'they check that the code runs, they are not results.')
  legacy = sorted({row['run'] for row in table if row.get('legacy')})
  if legacy:
    notes.append(f'{", ".join(legacy)}: summarised by an older w2s with percentile-bootstrap '
                 'intervals; rerun to get t-intervals.')
  text = ('Test-set numbers, mean [95% Student-t interval] over seeds (accuracies, rates and '
          'gains in %, PGR as a fraction); below 3 seeds the values and no interval; "k of n '
          'seeds" where a number is undefined for some seeds (e.g. PGR when the weak model '
          'matches the ceiling).\n\n' + '\n'.join(lines) + '\n'
          + ''.join(f'\n{n}\n' for n in notes))
  with open(md_path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(md_path + '.tmp', md_path)
  return [csv_path, md_path]


def _md_cell(row: dict, m: str) -> str:
  if f'{m}_mean' not in row:
    return ''
  s = {'mean': row[f'{m}_mean'], 'lo': row[f'{m}_lo'], 'hi': row[f'{m}_hi'], 'n': row[f'{m}_n'],
       'values': json.loads(row[f'{m}_values'])}
  cell = scores.fmt_summary(s, _scale(m))
  return cell + (f' ({s["n"]} of {row["seeds"]} seeds)' if 0 < s['n'] < row['seeds'] else '')


def _scale(stat: str) -> float:
  return 1.0 if stat == 'pgr' else 100.0


def choose_axes(runs: list[dict], x: str | None, group: str | None) -> tuple[str | None, list]:
  """(x key or None: the run order, group keys)."""
  axes = runs[0]['axes'] or sorted({k for r in runs for k in r['overrides']})
  if x is None:
    numeric = [k for k in axes if all(isinstance(r['overrides'].get(k), (int, float))
                                      for r in runs)]
    x = numeric[-1] if numeric else None
  for key in [x] + ([group] if group else []):
    if key is not None and key not in axes:
      raise UserError(f'--x/--group {key!r} is not a swept key; swept: {", ".join(axes) or "none"}')
  groups = [group] if group else [k for k in axes if k != x]
  return x, groups


def _series(runs, x, groups):
  """{group label: [(x value, run)] sorted by x}."""
  out: dict[str, list] = {}
  for i, r in enumerate(runs):
    label = ', '.join(f'{g.rsplit(".", 1)[-1]}={_cell(r["overrides"].get(g))}' for g in groups)
    xv = r['overrides'].get(x, i) if x else i
    out.setdefault(label or 'all', []).append((xv, r))
  return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def _band(ax, xs, stats, k, label, color, style='-'):
  """The means as a line, the t-intervals as a band (none where a run has fewer than 3 seeds:
  results.json stores the missing ends as null)."""
  part = lambda p: np.array([k * s[p] if s['n'] and s[p] is not None else np.nan for s in stats])
  mean, lo, hi = part('mean'), part('lo'), part('hi')
  ax.plot(xs, mean, style, marker='o', color=color, label=label)
  if all(isinstance(v, (int, np.integer)) for v in xs):
    ax.set_xticks(sorted(set(xs)))
  ax.fill_between(xs, lo, hi, color=color, alpha=0.18)


def plot_accuracy(runs, x, groups, out) -> str:
  plt = _plt()
  series = _series(runs, x, groups)
  losses = _losses(runs)
  fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.6), squeeze=False)
  colors = plt.get_cmap('tab10')
  for ax, (label, pts) in zip(axes[0], series.items()):
    xs = [p[0] for p in pts]
    first = [next(iter(p[1]['results']['summary'].values())) for p in pts]
    _band(ax, xs, [f['acc_weak'] for f in first], 100, 'weak', '#888888', '--')
    _band(ax, xs, [f['acc_ceiling'] for f in first], 100, 'ceiling (strong on truth)', '#228833')
    for j, loss in enumerate(losses):
      have = [p for p in pts if loss in p[1]['results']['summary']]
      _band(ax, [p[0] for p in have], [p[1]['results']['summary'][loss]['acc_student']
                                       for p in have], 100, f'student {loss}', colors(j))
    ax.set_title(label, fontsize=9)
    ax.set_xlabel(x or 'run')
    ax.set_ylabel('test accuracy (%)')
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=8)
  fig.suptitle(f'{_smoke(runs)}weak-to-strong test accuracy, {_interval_note(runs)}', fontsize=10)
  return _save(fig, os.path.join(out, 'accuracy.png'))


def plot_pgr(runs, x, groups, out) -> str:
  plt = _plt()
  series = _series(runs, x, groups)
  losses = _losses(runs)
  fig, axes = plt.subplots(1, len(losses), figsize=(4.2 * len(losses), 3.6), squeeze=False,
                           sharey=True)
  colors = plt.get_cmap('viridis')
  for ax, loss in zip(axes[0], losses):
    for j, (label, pts) in enumerate(series.items()):
      pts = [p for p in pts if loss in p[1]['results']['summary']]
      _band(ax, [p[0] for p in pts], [p[1]['results']['summary'][loss]['pgr'] for p in pts], 1,
            label, colors(j / max(1, len(series) - 1)))
    ax.axhline(0, color='black', lw=0.8)
    ax.axhline(1, color='#228833', lw=0.8, ls='--')
    ax.set_title(f'student loss: {loss}', fontsize=9)
    ax.set_xlabel(x or 'run')
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel('PGR (performance gap recovered)')
  axes[0][-1].legend(fontsize=8)
  fig.suptitle(f'{_smoke(runs)}PGR, {_interval_note(runs)}', fontsize=10)
  return _save(fig, os.path.join(out, 'pgr.png'))


def _losses(runs) -> list[str]:
  """Every student loss of the weak-to-strong runs, in first-seen order."""
  return list(dict.fromkeys(loss for r in runs for loss in r['results']['summary']))


def _smoke(runs) -> str:
  return results_lib.SMOKE if any((r['results'].get('config') or {}).get('smoke')
                                  for r in runs) else ''


def _interval_note(runs) -> str:
  counts = [len(r['results'].get('seeds', [])) for r in runs]
  lo, hi = min(counts), max(counts)
  n = f'{lo}' if lo == hi else f'{lo}-{hi}'
  if hi < scores.MIN_SEEDS_FOR_INTERVAL:
    return f'mean over {n} seeds, no interval (fewer than 3 seeds)'
  return (f'mean over {n} seeds, 95% t-interval bands'
          + (' where a run has 3 or more' if lo < scores.MIN_SEEDS_FOR_INTERVAL else ''))


def plot_curves(runs, out) -> str | None:
  """Training loss per stage kind (seed 0), one line per run."""
  from w2s import metrics
  plt = _plt()
  curves: dict[str, list] = {}
  for r in runs:
    seed0 = r['results']['per_seed'][0]
    root = r['results'].get('provenance', {}).get('config', {}).get('shared_dir') or r['dir']
    for kind, rel in seed0.get('stages', {}).items():
      recs = [rec for rec in metrics.read_records(os.path.join(root, rel)) if 'loss' in rec]
      if recs:
        curves.setdefault(kind, []).append((r['name'], recs))
  if not curves:
    return None
  fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.4), squeeze=False)
  for ax, (kind, lines) in zip(axes[0], curves.items()):
    for name, recs in lines:
      ax.plot([x['step'] for x in recs], [x['loss'] for x in recs], label=name, lw=1)
    ax.set_title(kind, fontsize=9)
    ax.set_xlabel('step')
    ax.set_ylabel('training loss')
    ax.grid(alpha=0.3)
  if sum(len(v) for v in curves.values()) <= 12 * len(curves):
    axes[0][0].legend(fontsize=6)
  fig.suptitle('training curves (seed 0)', fontsize=10)
  return _save(fig, os.path.join(out, 'curves.png'))


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path):
  plt = _plt()
  fig.tight_layout()
  fig.savefig(path + '.tmp.png', dpi=110)
  plt.close(fig)
  os.replace(path + '.tmp.png', path)
  return path


def report(dirs: list[str], out: str | None = None, x: str | None = None,
           group: str | None = None) -> list[str]:
  """Writes the tables and plots; returns their paths."""
  runs = find_runs(dirs)
  if out is None:
    out = os.path.join(dirs[0], 'report') if _is_run(dirs[0]) else dirs[0]
  if _is_run(out):
    raise UserError(f'--out {out} is a run directory (it holds results.json): a report never '
                    'writes into a run; pass another --out')
  x, groups = choose_axes(runs, x, group)
  table = rows(runs)
  try:
    os.makedirs(out, exist_ok=True)
    paths = write_tables(table, out)
    w2s_runs = [r for r in runs if kind(r) == 'weak_to_strong']
    if w2s_runs:
      paths += [plot_accuracy(w2s_runs, x, groups, out), plot_pgr(w2s_runs, x, groups, out)]
    curves = plot_curves(runs, out)
  except OSError as e:
    raise UserError(f'cannot write the report into {out} ({e.strerror or e}); pass a writable '
                    '--out DIR') from e
  return paths + ([curves] if curves else [])


def _is_run(d: str) -> bool:
  return os.path.exists(os.path.join(d, 'results.json'))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m w2s.report', description=__doc__.split('\n')[0])
  ap.add_argument('dirs', nargs='+', help='sweep or run directories')
  ap.add_argument('--out', default=None, help='where to write (default: the first DIR)')
  ap.add_argument('--x', default=None, help='swept key on the x axis')
  ap.add_argument('--group', default=None, help='swept key whose values get separate panels/lines')
  a = ap.parse_args(argv)
  try:
    for path in report(a.dirs, a.out, a.x, a.group):
      print(path)
    return 0
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 2


if __name__ == '__main__':
  sys.exit(main())
