"""Weak-label cleaners (w2s/cleaning/) against hand-made 2-D examples, and the clean stage.

Points are given by angle (cosine neighbourhoods depend on angles alone), some scaled so that a
Euclidean neighbourhood would differ. The cleaners are numpy / scikit-learn on the host: nothing
runs under jit, so there is no device count to compare.
"""
import dataclasses

import numpy as np
import pytest

from w2s import cleaning, options, registry
from w2s.cleaning import knn, logreg, topo
from w2s.errors import UserError
from w2s.protocols import cleaning_stage
from w2s.protocols.stages import Stage


def _at(degrees, scale=None):
  a = np.deg2rad(np.asarray(degrees, np.float64))
  x = np.stack([np.cos(a), np.sin(a)], 1)
  return x * (np.ones(len(a)) if scale is None else np.asarray(scale))[:, None]


def _p1(p):  # binary soft labels from p(class 1)
  p = np.asarray(p, np.float64)
  return np.stack([1 - p, p], 1)


# angles 0, 10, 25 (x10 in norm), 90, 100 degrees
KNN_X = _at([0, 10, 25, 90, 100], scale=[1, 1, 10, 1, 1])
KNN_Y = _p1([0.1, 0.2, 0.7, 0.9, 0.4])


def test_registry_lists_the_cleaners():
  assert registry.known('cleaners') == ['knn', 'logreg', 'topo']
  assert options.plugin('cleaners', dict(name='knn', k=3), 'clean').hparams == {'k': 3}
  with pytest.raises(UserError, match="has no option 'features'"):  # supplied by w2s only
    options.plugin('cleaners', dict(name='knn', features=1), 'clean')


def test_neighbours_are_cosine_and_never_the_row_itself():
  # Euclidean: row 0's second neighbour would be row 3 (1.41 away), not row 2 (9.1 away)
  np.testing.assert_array_equal(cleaning.neighbours(KNN_X, 2),
                                [[1, 2], [0, 2], [1, 0], [4, 2], [3, 2]])
  # blocks of rows give the same answer
  old = cleaning.BLOCK_ROWS
  try:
    cleaning.BLOCK_ROWS = 2
    np.testing.assert_array_equal(cleaning.neighbours(KNN_X, 2), cleaning.neighbours(KNN_X, 2))
  finally:
    cleaning.BLOCK_ROWS = old


def test_knn_vote_by_hand():
  new, keep = knn.clean(KNN_X, KNN_Y, k=2)
  # p(1) of the votes: mean of rows (1, 2), (0, 2), (1, 0), (4, 2), (3, 2)
  np.testing.assert_allclose(new[:, 1], [0.45, 0.4, 0.15, 0.55, 0.8], rtol=1e-12)
  np.testing.assert_allclose(new.sum(1), 1.0, rtol=1e-12)
  assert keep.all()
  _, keep = knn.clean(KNN_X, KNN_Y, k=2, drop_disagreeing=True)
  # own hard labels 0 0 1 1 0, vote's 0 0 0 1 1: rows 2 and 4 disagree
  np.testing.assert_array_equal(keep, [True, True, False, True, False])


def test_knn_bad_options_are_one_line():
  with pytest.raises(UserError, match=r'clean.k=0 \(knn\) must be an int >= 1'):
    knn.clean(KNN_X, KNN_Y, k=0)
  with pytest.raises(UserError, match='needs at least 6 rows'):
    knn.clean(KNN_X, KNN_Y, k=5)


def test_logreg_cross_fit_folds_never_see_their_rows():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(30, 3))
  y = _p1(rng.uniform(size=30))
  np.testing.assert_array_equal(logreg.folds_of(7, 3), [0, 1, 2, 0, 1, 2, 0])
  base, _ = logreg.clean(x, y, folds=3, l2=0.1)
  flipped = y.copy()
  flipped[4] = flipped[4, ::-1]                       # row 4 is in fold 4 % 3 = 1
  new, _ = logreg.clean(x, flipped, folds=3, l2=0.1)
  same = logreg.folds_of(30, 3) == 1
  np.testing.assert_array_equal(new[same], base[same])  # fold 1's probe never read row 4
  assert np.abs(new[~same] - base[~same]).max() > 1e-4  # the other folds' probes did


def test_logreg_probe_is_the_l2_soft_cross_entropy_minimiser():
  """Binary: p = sigmoid(w.x + b) minimising mean_i CE(y_i, p_i) + l2/2 ||w||^2, by scipy."""
  from scipy.optimize import minimize
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(40, 2)), _p1(rng.uniform(size=40))
  l2 = 0.05

  def objective(wb):
    z = x @ wb[:2] + wb[2]
    ce = y[:, 1] * np.logaddexp(0, -z) + y[:, 0] * np.logaddexp(0, z)
    return ce.mean() + 0.5 * l2 * wb[:2] @ wb[:2]
  wb = minimize(objective, np.zeros(3), method='BFGS', options=dict(gtol=1e-10)).x
  want = 1 / (1 + np.exp(-(x @ wb[:2] + wb[2])))
  got = logreg.fit_predict(x, y, x, l2=l2, max_iter=1000)
  np.testing.assert_allclose(got[:, 1], want, rtol=1e-5)


def test_logreg_relabels_a_flipped_point_by_its_side():
  x = np.concatenate([_at(np.linspace(-40, 40, 10)), _at(np.linspace(140, 220, 10))])
  hard = np.array([0] * 10 + [1] * 10)
  hard[3] = 1                                          # one flipped weak label
  new, keep = logreg.clean(x, np.eye(2)[hard], folds=5, l2=1e-2, drop_disagreeing=True)
  np.testing.assert_array_equal(new.argmax(1), [0] * 10 + [1] * 10)
  np.testing.assert_array_equal(np.flatnonzero(~keep), [3])


def test_logreg_fold_with_a_missing_class():
  x = _at([0, 10, 20, 30])
  y = np.eye(3)[[0, 0, 1, 2]]                          # fold 1 of 2 fits on rows 0, 2: no class 2
  new, _ = logreg.clean(x, y, folds=2, l2=1.0)
  np.testing.assert_allclose(new.sum(1), 1.0, rtol=1e-12)
  assert new[1, 2] == 0.0 and new[3, 2] == 0.0


# class 0 at 0, 4, 10 degrees and an island at 91 (row 3) among class 1 at 85, 95, 100
TOPO_X = _at([0, 4, 10, 91, 85, 95, 100], scale=[1, 3, 1, 1, 2, 1, 1])
TOPO_Y = _p1([0.0, 0.1, 0.4, 0.3, 0.6, 0.8, 0.9])


def test_topo_largest_strongly_connected_component_by_hand():
  # k=2 neighbours: 0->(1,2) 1->(0,2) 2->(1,0) 3->(5,4) 4->(3,5) 5->(3,6) 6->(5,3). Within class
  # 0 {0,1,2,3}: {0,1,2} is strongly connected, 3 has no edge into its class. Within class 1
  # {4,5,6}: 4->5, 5->6, 6->5: {5,6}; 4 reaches 5 but nothing returns to 4.
  np.testing.assert_array_equal(cleaning.neighbours(TOPO_X, 2)[3:], [[5, 4], [3, 5], [3, 6],
                                                                      [5, 3]])
  new, keep = topo.clean(TOPO_X, TOPO_Y, k=2, k_zeta=2, contamination=0.0)
  np.testing.assert_array_equal(keep, [True, True, True, False, False, True, True])
  np.testing.assert_array_equal(new, TOPO_Y)         # labels unchanged


def test_topo_neighbourhood_step_by_hand():
  # round(7 * 0.5) = 4 to drop, 2 by the component step, so 2 more among {0,1,2,5,6}. Their 2
  # nearest kept rows: 0:(1,2) 1:(0,2) 2:(1,0) 5:(6,2) 6:(5,2); |p - mean p of neighbours|:
  # 0.25, 0.1, 0.35, 0.15, 0.3 -> rows 2 and 6 go
  _, keep = topo.clean(TOPO_X, TOPO_Y, k=2, k_zeta=2, contamination=0.5)
  np.testing.assert_array_equal(keep, [True, True, False, False, False, True, False])
  # asking for fewer than the component step dropped drops no more
  _, keep = topo.clean(TOPO_X, TOPO_Y, k=2, k_zeta=2, contamination=0.2)
  assert (~keep).sum() == 2


def test_topo_component_size_tie_goes_to_the_lowest_row():
  hard = np.array([0, 0, 0, 0])
  nbrs = np.array([[1], [0], [3], [2]])                # two 2-cycles of class 0
  np.testing.assert_array_equal(topo.largest_components(nbrs, hard), [True, True, False, False])


def test_report_counts_and_gold_accuracy():
  before = _p1([0.2, 0.7, 0.6, 0.1])
  after = _p1([0.8, 0.7, 0.3, 0.1])
  keep = np.array([True, True, True, False])
  r = cleaning.report('knn', before, after, keep, np.array([1, 1, 0, -1]))
  assert r == {'method': 'knn', 'n': 4, 'n_dropped': 1, 'n_relabelled': 2,
               'weak_accuracy_before': pytest.approx(1 / 3),
               'weak_accuracy_before_kept': pytest.approx(1 / 3),
               'weak_accuracy_after': pytest.approx(1.0)}


def test_apply_refuses_bad_cleaner_outputs():
  bad = lambda f, y: (y[:, :1], np.ones(len(y), bool))
  with pytest.raises(UserError, match=r'must return soft labels \[5, 2\]'):
    cleaning.apply(bad, KNN_X, KNN_Y, where='clean x')
  none = lambda f, y: (y, np.zeros(len(y), bool))
  with pytest.raises(UserError, match='dropped every row'):
    cleaning.apply(none, KNN_X, KNN_Y, where='clean x')


def test_check_runs_the_cleaner_before_anything_trains():
  cleaning_stage.check(options.plugin('cleaners', dict(name='topo', k=3), 'clean'), 3)
  with pytest.raises(UserError, match='contamination'):
    cleaning_stage.check(options.plugin('cleaners', dict(name='topo', contamination=1.5),
                                        'clean'), 2)
  assert cleaning_stage.resolve(None) is None and cleaning_stage.resolve({}) is None
  with pytest.raises(UserError, match="strong.model 'mlp' has none"):  # no backbone features
    cleaning_stage.check(options.plugin('cleaners', dict(name='knn'), 'clean'), 2, _strong())


def test_the_cleaning_stage_is_a_helper_not_a_protocol():
  """--list names protocols by their `run`; the weak-to-strong protocol's stages are not one."""
  protocols = registry.known('protocols')
  assert 'weak_to_strong' in protocols
  assert not {'cleaning_stage', 'overlap_stage', 'stages', 'learners'} & set(protocols)


def test_stage_relabels_filters_and_is_skipped_when_done(tmp_path, capsys):
  """The stage on B: kept rows with the new labels, the ensemble's members carried for them, val
  untouched, the report; a second run reads it back without computing features."""
  p = options.plugin('cleaners', dict(name='knn', k=2, drop_disagreeing=True), 'clean')
  ids = np.array([10, 11, 12, 13, 14])
  b = {'id': ids, 'label': np.array([0, 0, 0, 1, 1])}
  order = np.array([4, 2, 0, 1, 3])                    # the teacher's rows in another order
  members = np.repeat(KNN_Y[:, None], 2, axis=1)
  teacher = {'strong_train_id': ids[order], 'strong_train_probs': KNN_Y[order].astype(np.float32),
             'strong_train_member_probs': members[order], 'val_id': np.array([1]),
             'val_probs': np.array([[0.5, 0.5]])}
  calls = []

  def features(raw):
    calls.append(raw['id'])
    return KNN_X[np.searchsorted(ids, raw['id'])]
  st, = cleaning_stage.plan(str(tmp_path), ('base',), p, _strong(), 'teacher-key', seed=0)
  out, kept, rep = cleaning_stage.clean([st], p, features, b, teacher, 2)
  np.testing.assert_array_equal(kept['id'], [10, 11, 13])
  np.testing.assert_allclose(out['strong_train_probs'][:, 1], [0.45, 0.4, 0.55], rtol=1e-6)
  np.testing.assert_allclose(out['strong_train_member_probs'], members[[0, 1, 3]])
  np.testing.assert_array_equal(out['val_probs'], teacher['val_probs'])
  assert rep['n_dropped'] == 2 and rep['n_relabelled'] == 0
  assert rep['weak_accuracy_before'] == pytest.approx(3 / 5)   # hard weak labels 0 0 1 1 0
  assert rep['weak_accuracy_after'] == pytest.approx(3 / 3)
  assert 'relabelled, 2 dropped' in capsys.readouterr().out
  again = cleaning_stage.clean([st], p, features, b, teacher, 2)
  assert len(calls) == 1 and 'done earlier, skipped' in capsys.readouterr().out
  np.testing.assert_array_equal(again[1]['id'], kept['id'])
  assert again[2] == rep
  assert cleaning_stage.clean([], None, features, b, teacher, 2) == (teacher, b, None)


def _strong():
  from w2s.protocols import learners
  return learners.RoleOptions.from_section(
      'strong', dict(model=dict(name='mlp', size='linear'), loss=dict(name='xent'),
                     train=dict(optimizer=dict(name='adam'), batch_size=8)), input_kind='vector')


def test_stage_key_follows_the_cleaner_and_the_features_only(tmp_path):
  knn2 = options.plugin('cleaners', dict(name='knn', k=2), 'clean')
  key = lambda p, strong=None: cleaning_stage.plan('/r', ('b',), p, strong or _strong(), 't',
                                                   0)[0].key
  assert key(knn2) != key(options.plugin('cleaners', dict(name='knn', k=3), 'clean'))
  other_train = dataclasses.replace(_strong(), train=dict(batch_size=16))
  assert key(knn2) == key(knn2, other_train)           # the strong model's training is not read
  assert cleaning_stage.plan('/r', ('b',), None, _strong(), 't', 0) == []
  assert isinstance(cleaning_stage.plan('/r', ('b',), knn2, _strong(), 't', 0)[0], Stage)
