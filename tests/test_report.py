"""w2s.report on damaged, mixed and small inputs: one error line and exit 2, never a traceback, never
a write into a run's own directory; intervals, seed counts and smoke runs carried into the tables."""
import csv
import hashlib
import json
import os
import re

import numpy as np
import pytest

from w2s import report, scores, train
from w2s.protocols import results as results_lib
from w2s.protocols import self_training_results


def _probs(rng, labels, acc):
  """[N, 2] probabilities right on about `acc` of the rows."""
  right = rng.random(len(labels)) < acc
  pred = np.where(right, labels, 1 - labels)
  return np.eye(2)[pred] * 0.8 + 0.1


def _w2s_results(seeds, smoke=False, losses=('xent', 'logconf')):
  rng = np.random.default_rng(len(seeds))
  per_seed = []
  for seed in seeds:
    y = rng.integers(0, 2, 400)
    weak, ceiling = _probs(rng, y, 0.65), _probs(rng, y, 0.8)
    rec = {'seed': seed}
    for i, name in enumerate(losses):
      rec[name] = results_lib.score_seed(weak, _probs(rng, y, 0.68 + 0.04 * i), ceiling, y)
    per_seed.append(rec)
  config = {'protocol': {'name': 'weak_to_strong'}, 'smoke': smoke}
  return results_lib.summarize(per_seed, list(losses), config)


def _write(path, results):
  """As a run writes it (NaN -> null)."""
  os.makedirs(path, exist_ok=True)
  train.write_json_atomic(os.path.join(path, 'results.json'), results)


def _run(args, capsys):
  code = report.main(args)
  err = capsys.readouterr().err.strip().splitlines()
  return code, err


def _digest(path):
  return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def test_tables_carry_intervals_seed_counts_and_smoke_marks(tmp_path):
  _write(tmp_path / 'five', _w2s_results(range(5)))
  _write(tmp_path / 'two', _w2s_results(range(2), smoke=True))
  paths = report.report([str(tmp_path)], str(tmp_path / 'out'))
  assert {os.path.basename(p) for p in paths} >= {'report.csv', 'report.md', 'pgr.png'}
  md = open(tmp_path / 'out' / 'report.md').read()
  assert '95% Student-t interval' in md and 'bootstrap' not in md
  five = [l for l in md.splitlines() if l.startswith('| five | xent | weak_to_strong | 5 ')]
  two = [l for l in md.splitlines() if l.startswith('| two | xent | weak_to_strong | 2 ')]
  assert len(five) == 1 and len(two) == 1, md
  assert '[' in five[0] and 'no interval' not in five[0]
  assert '(n=2: no interval)' in two[0] and 'smoke test' in two[0] and '[' not in two[0]
  assert 'not results' in md  # the smoke note
  rows = list(csv.DictReader(open(tmp_path / 'out' / 'report.csv')))
  by = {(r['run'], r['loss']): r for r in rows}
  assert by[('two', 'xent')]['smoke'] == 'True' and by[('two', 'xent')]['pgr_lo'] == 'nan'
  assert by[('five', 'xent')]['acc_student_n'] == '5'
  s = _w2s_results(range(5))['summary']['xent']['acc_student']
  assert float(by[('five', 'xent')]['acc_student_lo']) == pytest.approx(s['lo'], rel=1e-9)


def test_k_of_n_seeds_when_pgr_is_undefined_for_some(tmp_path):
  res = _w2s_results(range(4))
  res['per_seed'][1]['xent']['pgr'] = float('nan')
  res['summary']['xent']['pgr'] = scores.summarize_seeds(
      [r['xent']['pgr'] for r in res['per_seed']])._asdict()
  _write(tmp_path / 'run', res)
  report.report([str(tmp_path / 'run')])
  md = open(tmp_path / 'run' / 'report' / 'report.md').read()
  assert '(3 of 4 seeds)' in md


def test_single_run_report_never_writes_into_the_run(tmp_path, capsys):
  run = tmp_path / 'run'
  _write(run, _w2s_results(range(3)))
  results_lib.plot(json.load(open(run / 'results.json')), str(run))
  results_lib.plot(_w2s_results(range(2)), str(tmp_path))  # NaN ends in memory, too
  before = {p: _digest(run / p) for p in os.listdir(run)}
  code, err = _run([str(run)], capsys)
  assert code == 0, err
  assert {p: _digest(run / p) for p in before} == before
  assert os.path.exists(run / 'report' / 'accuracy.png')
  code, err = _run([str(run), '--out', str(run)], capsys)
  assert code == 2 and len(err) == 1 and err[0].startswith('error:') and 'run directory' in err[0]
  assert {p: _digest(run / p) for p in before} == before


@pytest.mark.parametrize('damage', ['truncated', 'empty', 'list', 'summary_str', 'no_stats'])
def test_damaged_results_json_is_one_error_line(tmp_path, capsys, damage):
  _write(tmp_path / 'good', _w2s_results(range(3)))
  path = tmp_path / 'bad' / 'results.json'
  _write(tmp_path / 'bad', _w2s_results(range(3)))
  text = path.read_text()
  path.write_text({'truncated': text[:len(text) // 2], 'empty': '', 'list': '[1, 2]',
                   'summary_str': json.dumps({'summary': 'oops', 'seeds': [0]}),
                   'no_stats': json.dumps({'summary': {'xent': {'pgr': 1}}, 'seeds': [0]})}[damage])
  code, err = _run([str(tmp_path), '--out', str(tmp_path / 'out')], capsys)
  assert code == 2, err
  assert len(err) == 1 and err[0].startswith('error:') and 'bad' in err[0], err
  assert not os.path.exists(tmp_path / 'out' / 'report.md')


def test_damaged_sweep_index_is_one_error_line(tmp_path, capsys):
  _write(tmp_path / 'p1', _w2s_results(range(3)))
  for text in ('{"points": [{"name": "p1", "overr', '', '{"points": 3}'):
    (tmp_path / 'sweep.json').write_text(text)
    code, err = _run([str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1 and 'sweep.json' in err[0], err


def test_mixed_protocols_are_tabulated_or_left_out_with_a_line(tmp_path, capsys):
  _write(tmp_path / 'w2s', _w2s_results(range(3)))
  st = [{'seed': s, 'rounds': [{'acc': 0.8 + 0.01 * s, 'ece': 0.05},
                               {'acc': 0.85 + 0.01 * s, 'ece': 0.04,
                                'pseudo': {'accuracy': 0.9, 'coverage': 0.7, 'utilisation': 0.6}}]}
        for s in range(3)]
  _write(tmp_path / 'st', self_training_results.summarize(st, {'protocol': {'name': 'self_training'}}))
  _write(tmp_path / 'pixel', {'summary': {'k4/judge_random': {'mean': 0.4, 'lo': 0.3, 'hi': 0.5,
                                                              'n': 3, 'n_nan': 0}},
                              'seeds': [0, 1, 2], 'config': {'protocol': {'name': 'pixel_debate'}}})
  code, err = _run([str(tmp_path), '--out', str(tmp_path / 'out')], capsys)
  assert code == 0, err
  assert any('pixel' in l and 'left out' in l for l in err)
  md = open(tmp_path / 'out' / 'report.md').read()
  lines = md.splitlines()
  assert any(l.startswith('| st |') and '| self_training |' in l for l in lines), md
  assert sum(l.startswith('| w2s |') and '| weak_to_strong |' in l for l in lines) == 2, md
  # the self-training gain is a paired difference of the same seeds: +0.05 with zero spread
  gain = self_training_results.summarize(st, {})['summary']['gain']
  assert gain['mean'] == pytest.approx(0.05) and gain['lo'] == pytest.approx(0.05)


def test_unwritable_out_is_one_error_line(tmp_path, capsys):
  _write(tmp_path / 'run', _w2s_results(range(3)))
  (tmp_path / 'file').write_text('not a directory')
  code, err = _run([str(tmp_path / 'run'), '--out', str(tmp_path / 'file' / 'out')], capsys)
  assert code == 2 and len(err) == 1 and err[0].startswith('error: cannot write'), err


def test_w2s_table_has_paired_rows_and_no_interval_below_three(tmp_path):
  res = _w2s_results(range(5))
  pair = res['paired']['logconf - xent']
  diff = [r['logconf']['acc_student'] - r['xent']['acc_student'] for r in res['per_seed']]
  assert pair['acc_student']['mean'] == pytest.approx(np.mean(diff), rel=1e-9)
  assert pair['acc_student'] == scores.paired_difference(
      [r['logconf']['acc_student'] for r in res['per_seed']],
      [r['xent']['acc_student'] for r in res['per_seed']])._asdict()
  text = results_lib.table(res)
  assert '5 seeds, mean [95% t-interval]' in text and 'paired difference logconf - xent' in text
  small = results_lib.table(_w2s_results(range(2), smoke=True))
  assert small.startswith('SMOKE TEST') and '(n=2: no interval)' in small
  assert not re.search(r'\d \[', small)  # no 'mean [lo, hi]' anywhere
