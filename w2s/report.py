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
                           group (e.g. weak-supervisor strength): weak, ceiling, each student;
                           without a numeric swept key, grouped bars per run (no lines between
                           unrelated runs), each seed a dot, the axis from zero or broken
  pgr.png                  PGR vs the x axis, one panel per student loss, one line per group,
                           t-intervals as bands (the form of Burns et al. 2023, Figs. 3-4); or
                           grouped bars per run
  curves.png               held-out accuracy of each stage kind over steps, one line per run
                           with a band over seeds, one scale; a kind with no held-out
                           evaluation (llp, ssl) its training loss, one panel per run

The axes come from the sweep's `sweep.json`: by default the last swept key with numeric values
is x and the other swept keys form the groups.
"""
import argparse
import csv
import json
import os
import sys

from w2s import report_plots, scores
from w2s.errors import UserError

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
      losses = list(dict.fromkeys(loss for r in w2s_runs for loss in r['results']['summary']))
      paths += [report_plots.plot_accuracy(w2s_runs, x, groups, out, losses),
                report_plots.plot_pgr(w2s_runs, x, groups, out, losses)]
    curves = report_plots.plot_curves(runs, out)
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
