"""Overlap detection (Shin, Cooper & Sala 2024; `w2s.overlap`) against hand-built examples, the
budgeted ground-truth query's row selection (`w2s.protocols.queries`), their config checks, and a
tiny weak-to-strong run with both: the report agrees with the saved per-row predictions, budget 0
is the plain student's stage, and a new budget trains only its own student.

Everything here is host-side numpy (no jit), so there is no device count to compare."""
import json
import os

import numpy as np
import pytest

from w2s import overlap, train
from w2s.errors import UserError
from w2s.protocols import queries, weak_to_strong

from test_weak_to_strong import _config


# --- overlap detection ----------------------------------------------------------------------

def _l2(x):
  x = np.asarray(x, np.float64)
  return float(np.sum((x - x.mean()) ** 2))


def test_change_point_is_binseg_l2_on_its_grid_by_hand():
  # a true break at 7 is off ruptures' grid (0, 5, 10, 15): candidates 5, 10, 15 by hand
  x = np.array([0.0] * 7 + [1.0] * 13)
  gains = {b: _l2(x) - _l2(x[:b]) - _l2(x[b:]) for b in (5, 10, 15)}
  np.testing.assert_allclose([gains[5], gains[10], gains[15]],
                             [91 / 20 - 26 / 15, 91 / 20 - 2.1, 91 / 20 - 56 / 15], rtol=1e-12)
  assert overlap.change_point(x) == 5 == max(gains, key=gains.get)
  assert overlap.change_point(np.r_[[0.1] * 10, [0.9] * 10]) == 10
  assert overlap.change_point(np.ones(20)) == 15          # all gains 0: ruptures takes the last
  assert overlap.change_point(np.r_[[0.0] * 3, [1.0] * 9], jump=1, min_size=3) == 3
  with pytest.raises(UserError, match='needs at least 7 rows .* got 6'):
    overlap.change_point(np.arange(6.0), what='rows')


def test_confidence_is_twice_the_distance_from_one_half_and_its_multiclass_form():
  np.testing.assert_allclose(overlap.confidence([[0.3, 0.7], [0.5, 0.5], [1.0, 0.0]]),
                             [0.4, 0.0, 1.0], rtol=1e-12)
  np.testing.assert_allclose(overlap.confidence([[0.5, 0.3, 0.2]]), [(3 * 0.5 - 1) / 2],
                             rtol=1e-12)
  with pytest.raises(UserError, match=r'\[N, C >= 2\]'):
    overlap.confidence(np.ones(3))


def _hand_example():
  """10 unconfident rows along (0, 1); 10 confident rows along (0.1, 1) (both patterns: aligned
  with the unconfident ones), 10 confident rows along (1, 0.05) (easy only). The confident
  rows' confidences are distinct (0.80 ... 0.99); the smallest, 0.80, is an aligned row."""
  rng = np.random.default_rng(0)
  conf = np.r_[np.linspace(0.02, 0.08, 10), 0.80 + 0.01 * np.arange(10),
               0.90 + 0.009 * np.arange(10)]
  feats = np.r_[np.tile([0.0, 1.0], (10, 1)), np.tile([0.1, 1.0], (10, 1)),
                np.tile([1.0, 0.05], (10, 1))] * rng.uniform(0.5, 2.0, size=(30, 1))
  feats[::3] *= -1  # |cos|: a sign flip changes nothing
  p1 = (1 + conf) / 2
  perm = rng.permutation(30)
  return np.stack([1 - p1, p1], 1)[perm], feats[perm], perm


def test_overlap_rows_of_a_hand_built_example():
  probs, feats, perm = _hand_example()
  found = overlap.detect(probs, feats)
  kind = np.r_[['hard'] * 10, ['both'] * 10, ['easy'] * 10][perm]
  conf = overlap.confidence(probs)
  # step 1: sorted confidences break at 10 (grid 5, 10, ...); t = sorted[10] = 0.80, the
  # smallest confident row, which `conf <= t` puts with the unconfident ones (as their script)
  assert found['confidence_threshold'] == pytest.approx(0.80, rel=1e-12)
  np.testing.assert_array_equal(found['hard'], (kind == 'hard') | np.isclose(conf, 0.80))
  # step 2: the 19 confident rows' max |cos| to the hard rows, by hand
  unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  hand = np.abs(unit[~found['hard']] @ unit[found['hard']].T).max(1)
  np.testing.assert_allclose(found['align'][~found['hard']], hand, rtol=1e-12)
  assert np.isnan(found['align'][found['hard']]).all()
  # 10 easy rows near cos 0.05, 9 aligned rows near 0.995: the break at 10, overlap = the 9
  np.testing.assert_array_equal(found['overlap'], (kind == 'both') & ~np.isclose(conf, 0.80))
  np.testing.assert_array_equal(found['easy'], kind == 'easy')
  assert found['overlap'].sum() == 9
  old = overlap.BLOCK_ROWS
  try:  # the cosine matrix in blocks of rows gives the same answer
    overlap.BLOCK_ROWS = 4
    np.testing.assert_array_equal(overlap.detect(probs, feats)['align'], found['align'])
  finally:
    overlap.BLOCK_ROWS = old


def test_no_confident_row_means_no_overlap_and_bad_features_are_one_line():
  probs = np.full((12, 2), 0.5)
  found = overlap.detect(probs, np.ones((12, 3)))
  assert found['hard'].all() and not found['overlap'].any()
  with pytest.raises(UserError, match='features \\[N, D\\] for the N=12 rows'):
    overlap.detect(probs, np.ones((11, 3)))


# --- budgeted queries -----------------------------------------------------------------------

PROBS = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.5, 0.5], [0.99, 0.01]])
IDS = np.array([7, 3, 5, 1, 2, 9])


def test_query_scores_and_selection_by_hand():
  p = PROBS.astype(np.float64)
  ent = -(p * np.log(p)).sum(1)
  np.testing.assert_allclose(queries.uncertainty(PROBS, 'weak_entropy'), ent, rtol=1e-12)
  np.testing.assert_allclose(queries.uncertainty(PROBS, 'weak_margin'),
                             -np.abs(p[:, 0] - p[:, 1]), rtol=1e-12)
  # entropy: rows 0 and 4 tie at log 2 -> smaller id first (row 4, id 2), then rows 2 / 3 tie
  # (0.6 / 0.4) -> row 3 (id 1) before row 2 (id 5), then row 1, row 5
  assert queries.select(PROBS, IDS, 6, 'weak_entropy', 0).tolist() == [4, 0, 3, 2, 1, 5]
  assert queries.select(PROBS, IDS, 3, 'weak_margin', 0).tolist() == [4, 0, 3]
  assert queries.select(PROBS, IDS, 0, 'weak_entropy', 0).tolist() == []
  with pytest.raises(UserError, match='budget 7 exceeds the 6 rows of B'):
    queries.select(PROBS, IDS, 7, 'weak_entropy', 0)
  with pytest.raises(UserError, match='exceeds the 6 rows'):
    queries.check_budget(queries.Queries((0, 7), 'random'), 6)


def test_random_queries_are_nested_seeded_and_follow_ids_not_rows():
  rows = lambda k, seed, perm=np.arange(6): IDS[perm][queries.select(PROBS[perm], IDS[perm], k,
                                                                     'random', seed)]
  assert set(rows(2, 0)) <= set(rows(4, 0))
  perm = np.array([5, 3, 1, 0, 2, 4])
  assert rows(4, 0).tolist() == rows(4, 0, perm).tolist()
  picks = {tuple(rows(3, s)) for s in range(8)}
  assert len(picks) > 1  # the seed changes the draw


def test_bought_rows_carry_their_ground_truth_and_nothing_else_changes():
  truth = np.eye(2, dtype=np.float32)[[1, 1, 0, 0, 1, 0]]
  labels, rows = queries.labels_with_queries(PROBS, truth, IDS, 2, 'weak_entropy', 0)
  assert rows.tolist() == [4, 0]
  np.testing.assert_array_equal(labels[rows], truth[rows])
  rest = np.setdiff1d(np.arange(6), rows)
  np.testing.assert_array_equal(labels[rest], PROBS[rest].astype(np.float32))


# --- config checks --------------------------------------------------------------------------

@pytest.mark.parametrize('edit, words', [
    (dict(student=dict(queries=dict(budget=(0, -1)))), 'budget=[0, -1] must be'),
    (dict(student=dict(queries=dict(budget=(16,), by='entropy'))), "by='entropy' must be one"),
    (dict(student=dict(queries=dict(budgets=(16,)))), "unknown key 'budgets'"),
    (dict(student=dict(queries=dict(budget=(16,))), relabel_rounds=1), 'relabel_rounds=1'),
    (dict(overlap=dict(jump=0)), 'overlap.jump=0 must be > 0'),
    (dict(overlap=dict(jmp=3)), "overlap: unknown key 'jmp'"),
    (dict(overlap='yes'), "overlap='yes' must be a dict"),
])
def test_bad_options_are_one_line(edit, words):
  config = _config('runlocal,seeds=1,losses=xent')
  with config.unlocked():
    config.update(edit)
  with pytest.raises(UserError) as e:
    weak_to_strong.resolve(config)
  assert words in str(e.value) and '\n' not in str(e.value)


def test_dry_run_checks_both_options():
  """`--dry_run`'s check (w2s.main._dry_run, in process: a subprocess costs seconds): a config
  with both options passes, a bad one is one line naming its key."""
  from w2s import main
  assert 'nothing was trained' in main._dry_run(
      _config('runlocal,seeds=1,losses=xent,overlap,queries=0+16'))
  with pytest.raises(UserError, match="queries.by='entropy' must be one of .*'weak_margin'"):
    main._dry_run(_config('runlocal,queries=0+16,query_by=entropy'))
  with pytest.raises(UserError, match=r"queries='16\+x' must be budgets joined by \+"):
    _config('runlocal,queries=16+x')
  config = _config('runlocal,overlap')
  with config.unlocked():
    config.strong.model = dict(name='mlp', size='small')  # no backbone features to align
  with pytest.raises(UserError, match="overlap reads the strong model's backbone features"):
    main._dry_run(config)


def test_options_leave_every_existing_stage_key_unchanged(tmp_path):
  plain = weak_to_strong.stage_plan(
      weak_to_strong.resolve(_config('runlocal,seeds=1,losses=xent+gce')), str(tmp_path), 0)
  both = weak_to_strong.stage_plan(weak_to_strong.resolve(
      _config('runlocal,seeds=1,losses=xent+gce,overlap,queries=0+16+64')), str(tmp_path), 0)
  assert both['weak'].key == plain['weak'].key and both['ceiling'].key == plain['ceiling'].key
  for name in ('xent', 'gce'):  # budget 0 is the plain student's stage itself
    assert [s.key for s in both['students'][name]] == [s.key for s in plain['students'][name]]
    assert [s.kind for s in both['queries'][name]] == [f'student_{name}_q16',
                                                       f'student_{name}_q64']
  assert [s.kind for s in both['overlap']] == ['overlap'] and plain['overlap'] == []


# --- end to end -----------------------------------------------------------------------------

def _stage(root, prefix):
  d, = [d for d in os.listdir(root / 'stages') if d.startswith(prefix + '-')]
  return root / 'stages' / d


@pytest.mark.usefixtures('shared_feature_cache')
def test_tiny_run_with_overlap_and_queries_matches_its_saved_predictions(tmp_path, capsys,
                                                                         monkeypatch):
  from w2s import options
  from w2s.data import splits as splits_lib
  from w2s.protocols.stages import join_by_id
  from w2s import plots
  from w2s.protocols import results as results_lib
  saved = []  # figures are built but not drawn (time); pgr_budget is drawn once below
  monkeypatch.setattr(plots, 'save', lambda fig, path, dpi=120: (
      saved.append(os.path.basename(path)), plots.pyplot().close(fig))[0])
  config = _config('runlocal,seeds=1,losses=xent,overlap,queries=0+16')
  results = train.train_and_evaluate(config, str(tmp_path))
  capsys.readouterr()
  assert 'pgr_budget.png' in saved
  monkeypatch.undo()
  fig = results_lib.figures(results)['pgr_budget']
  assert os.path.getsize(plots.save(fig, str(tmp_path / 'pgr_budget.png'))) > 0
  rec = json.load(open(tmp_path / 'results.json'))['per_seed'][0]
  # test labels and B's rows of seed 0, as the run split them
  opts = weak_to_strong.resolve(config)
  parts = splits_lib.weak_to_strong(options.build(opts.dataset, 'dataset'), seed=0, **opts.splits)
  test, b = parts.splits['test'], parts.splits['strong_train']
  npz = lambda kind, key: np.load(_stage(tmp_path, f'{kind}-seed0') / 'outputs.npz')[key]
  on_test = lambda kind, v='test_probs': join_by_id(test['id'], npz(kind, 'test_id'),
                                                    npz(kind, v), kind)
  mask = on_test('overlap', 'overlap')
  assert mask.sum() == rec['overlap']['n_overlap'] == rec['overlap']['overlap']['n']
  assert (~mask).sum() == rec['overlap']['rest']['n']
  y = np.asarray(test['label'])
  for part, rows in (('overlap', mask), ('rest', ~mask)):
    acc = {k: np.mean(on_test(k)[rows].argmax(-1) == y[rows])
           for k in ('weak', 'ceiling', 'student_xent')}
    r = rec['overlap'][part]
    assert r['acc_weak'] == pytest.approx(acc['weak'], rel=1e-12)
    assert r['acc_ceiling'] == pytest.approx(acc['ceiling'], rel=1e-12)
    assert r['xent']['acc_student'] == pytest.approx(acc['student_xent'], rel=1e-12)
    gap = acc['ceiling'] - acc['weak']
    if gap > 1e-6:
      assert r['xent']['pgr'] == pytest.approx((acc['student_xent'] - acc['weak']) / gap)
  # budget 0 is the plain student; budget 16 bought the 16 rows of highest weak entropy of B
  q = rec['queries']['xent']
  assert q['0']['acc_student'] == rec['xent']['acc_student'] and q['0']['n_bought'] == 0
  acc16 = np.mean(on_test('student_xent_q16').argmax(-1) == y)
  assert q['16']['acc_student'] == pytest.approx(acc16, rel=1e-12)
  weak_b = join_by_id(b['id'], npz('weak', 'strong_train_id'), npz('weak', 'strong_train_probs'),
                      'B').astype(np.float64)
  ent = -(weak_b * np.log(np.clip(weak_b, 1e-300, 1))).sum(1)
  top = np.lexsort((np.asarray(b['id']), -ent))[:16]  # ties: the smaller id
  wrong = weak_b[top].argmax(-1) != np.asarray(b['label'])[top]
  assert q['16']['n_corrected'] == int(wrong.sum())
  assert results['queries']['xent']['16']['acc_student']['mean'] == pytest.approx(acc16)

  # one more budget trains that student only
  monkeypatch.setattr(plots, 'save', lambda fig, path, dpi=120: plots.pyplot().close(fig))
  train.train_and_evaluate(_config('runlocal,seeds=1,losses=xent,overlap,queries=0+16+32'),
                           str(tmp_path))
  out = capsys.readouterr().out
  assert out.count('done earlier, skipped') == 5  # weak, ceiling, overlap, student, q16
  assert '[student_xent_q32] done earlier' not in out
  assert (_stage(tmp_path, 'student_xent_q32-seed0') / 'done.json').exists()
  assert 'students with k ground-truth labels of B bought' in out
  assert 'overlap rows of test' in out


def test_overlap_and_budget_reports_by_hand_over_three_seeds():
  """score / summarize / table of both sections on made-up predictions: accuracies per part by
  hand, PGR from them, the summaries are scores.summarize_seeds' t-intervals."""
  from w2s import scores
  from w2s.protocols import overlap_stage, results as results_lib
  oh = lambda c: np.eye(2)[c]
  y = np.array([0, 1, 1, 0, 1, 0])
  mask = np.array([True, True, True, False, False, False])
  per_seed = []
  for seed, flip in enumerate((0, 1, 2)):
    student = y.copy()
    student[flip] = 1 - student[flip]            # one mistake, on an overlap row
    probs = {'label': y, 'weak': oh([1, 1, 0, 0, 0, 0]), 'ceiling': oh(y),
             'student_xent': oh(student)}
    rec = {'seed': seed, 'overlap': overlap_stage.score(mask, {'n_overlap': 3}, probs, ['xent'])}
    rec['queries'] = {'xent': queries.students(
        [], queries.Queries((0,), 'random'), None, {'id': np.arange(6)}, probs, 'xent', seed,
        teacher=probs['weak'], truth=oh(y), test_probs=None)}
    per_seed.append(rec)
  first = per_seed[0]['overlap']
  # overlap rows: weak 1/3 right (row 1), ceiling 3/3, student 2/3 -> PGR (2/3-1/3)/(1-1/3) = 0.5
  assert (first['overlap']['acc_weak'], first['overlap']['acc_ceiling']) == (1 / 3, 1.0)
  assert first['overlap']['xent']['pgr'] == pytest.approx(0.5, rel=1e-12)
  # rest: weak 2/3 (rows 3, 5), student 3/3 -> PGR 1; n's
  assert first['rest']['xent']['pgr'] == pytest.approx(1.0, rel=1e-12)
  assert (first['overlap']['n'], first['rest']['n'], first['n_overlap']) == (3, 3, 3)
  summ = overlap_stage.summarize(per_seed, ['xent'])
  expect = scores.summarize_seeds([r['overlap']['overlap']['xent']['acc_student']
                                   for r in per_seed])._asdict()
  assert summ['overlap']['xent']['acc_student'] == expect and expect['interval'] == 't'
  for r, d in zip(per_seed, (0.1, 0.3, 0.2)):  # a made-up budget 8, d better than budget 0
    r['queries']['xent']['8'] = {m: r['queries']['xent']['0'][m] + d for m in queries.METRICS}
  q = queries.summarize(per_seed)
  np.testing.assert_allclose(q['xent']['8']['pgr - k0']['values'], [0.1, 0.3, 0.2], rtol=1e-12)
  hand = scores.summarize_seeds([0.1, 0.3, 0.2])._asdict()  # t-interval of the differences
  for key in ('mean', 'lo', 'hi'):
    assert q['xent']['8']['acc_student - k0'][key] == pytest.approx(hand[key], rel=1e-9)
  assert 'pgr - k0' not in q['xent']['0']
  assert q['xent']['0']['acc_student']['mean'] == pytest.approx(5 / 6, rel=1e-12)
  assert q['xent']['0']['pgr']['mean'] == pytest.approx((5 / 6 - 1 / 2) / (1 - 1 / 2), rel=1e-12)
  text = results_lib.table({**results_lib.summarize(
      [{**r, 'xent': results_lib.score_seed(oh([1, 1, 0, 0, 0, 0]), oh(y), oh(y), y)}
       for r in per_seed], ['xent'], {}), 'overlap': summ, 'queries': q})
  assert 'overlap rows of test' in text and 'k = 0 is the plain student' in text
  assert scores.fmt_summary(summ['rest']['xent']['pgr']) in text
  line = queries.figure(q, 'title').axes[0].lines[0]  # the PGR means over the budgets
  np.testing.assert_allclose(line.get_xdata(), [0, 8])
  np.testing.assert_allclose(line.get_ydata(), [q['xent'][k]['pgr']['mean'] for k in ('0', '8')],
                             rtol=1e-12)
