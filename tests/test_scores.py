"""w2s.scores against sklearn and hand-computed values."""
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from w2s import scores


def test_accuracy_with_int_and_onehot_labels():
  probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
  assert scores.accuracy(probs, [0, 1, 0, 1]) == 0.5
  assert scores.accuracy(probs, np.eye(2)[[0, 1, 1, 1]]) == 0.75
  assert math.isnan(scores.accuracy(np.zeros((0, 2)), []))


def test_binary_auroc_matches_sklearn_with_ties():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, size=300)
  p1 = np.round(np.clip(0.3 * y + rng.uniform(size=300) * 0.7, 0, 1), 1)  # many ties
  probs = np.stack([1 - p1, p1], 1)
  expected = roc_auc_score(y, p1)
  assert scores.auroc(probs, y) == pytest.approx(expected, abs=1e-12)
  assert scores.auroc(p1, y) == pytest.approx(expected, abs=1e-12)
  logits = np.log(probs + 1e-3)  # C = 2 also takes logits (monotone score z_1 - z_0)
  expected = roc_auc_score(y, logits[:, 1] - logits[:, 0])
  assert scores.auroc(logits, np.eye(2)[y]) == pytest.approx(expected, abs=1e-12)


def test_hand_computed_auroc():
  # positives {.8, .4}, negatives {.6, .4, .2}: pairs won 1 + 1 + 1 + 0 + .5 (tie) + 1 = 4.5 / 6
  assert scores.binary_auroc([0.8, 0.4, 0.6, 0.4, 0.2], [1, 1, 0, 0, 0]) == pytest.approx(0.75)
  assert math.isnan(scores.binary_auroc([0.1, 0.2], [1, 1]))


def test_multiclass_auroc_is_sklearn_ovr_macro():
  rng = np.random.default_rng(1)
  y = rng.integers(0, 4, size=400)
  logits = rng.normal(size=(400, 4)) + 1.5 * np.eye(4)[y]
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  expected = roc_auc_score(y, probs, multi_class='ovr', average='macro')
  assert scores.auroc(probs, y) == pytest.approx(expected, abs=1e-12)


def test_ece_hand_computed():
  probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.62, 0.38], [0.3, 0.7], [0.45, 0.55]])
  labels = np.array([0, 1, 0, 1, 0])
  # bins of width 1/15: .9 -> (.867, .933] acc .5 conf .9; .62 -> (.6, .667] acc 1;
  # .7 -> (.667, .733] acc 1; .55 -> (.533, .6] acc 0
  expected = (2 * abs(0.5 - 0.9) + abs(1 - 0.62) + abs(1 - 0.7) + abs(0 - 0.55)) / 5
  assert scores.ece(probs, labels) == pytest.approx(expected)
  # .62 (right) and .65 (wrong) share the bin (.6, .667]: |.5 - .635|, not (.38 + .65) / 2
  both = np.array([[0.62, 0.38], [0.65, 0.35]])
  assert scores.ece(both, [0, 1]) == pytest.approx(0.135)
  assert scores.ece(both, [0, 1], num_bins=30) == pytest.approx((0.38 + 0.65) / 2)


def test_ece_of_calibrated_predictions_is_zero():
  probs = np.array([[0.75, 0.25]] * 4)
  assert scores.ece(probs, [0, 0, 0, 1]) == pytest.approx(0.0)


@pytest.mark.parametrize('weak, student, ceiling, expected', [
    (0.6, 0.7, 0.8, 0.5),
    (0.6, 0.8, 0.8, 1.0),
    (0.6, 0.5, 0.8, -0.5),  # worse than the supervisor
    (0.6, 0.9, 0.8, 1.5),   # beats the ceiling
])
def test_pgr_defined(weak, student, ceiling, expected):
  result = scores.pgr(weak, student, ceiling)
  assert result.value == pytest.approx(expected)
  assert result.reason is None


@pytest.mark.parametrize('weak, student, ceiling', [
    (0.8, 0.7, 0.8),          # no gap
    (0.8, 0.7, 0.75),         # ceiling below weak
    (0.8, 0.9, 0.8 + 1e-9),   # gap ~ 0: no division
    (0.8, float('nan'), 0.9),
])
def test_pgr_undefined_has_reason(weak, student, ceiling):
  result = scores.pgr(weak, student, ceiling)
  assert math.isnan(result.value)
  assert result.reason


def test_agreement_and_accuracy_by_weak_correctness():
  labels = np.array([0, 1, 1, 0, 1])
  weak = np.eye(2)[[0, 0, 1, 1, 1]] * 0.6 + 0.2  # right, wrong, right, wrong, right
  student = np.eye(2)[[0, 1, 1, 1, 0]] * 0.8 + 0.1
  assert scores.agreement(student, weak) == pytest.approx(3 / 5)
  split = scores.accuracy_by_weak_correctness(student, weak, labels)
  assert split == {'acc_weak_wrong': 0.5, 'acc_weak_right': pytest.approx(2 / 3),
                   'n_weak_wrong': 2, 'n_weak_right': 3}
  split = scores.accuracy_by_weak_correctness(student, np.eye(2)[labels], labels)
  assert math.isnan(split['acc_weak_wrong']) and split['n_weak_wrong'] == 0


def test_seed_summary_ci_contains_mean_and_shrinks():
  rng = np.random.default_rng(2)
  few, many = rng.normal(0.5, 0.1, size=5), rng.normal(0.5, 0.1, size=80)
  s_few, s_many = scores.summarize_seeds(few), scores.summarize_seeds(many)
  for s, values in ((s_few, few), (s_many, many)):
    assert s.mean == pytest.approx(values.mean())
    assert s.lo < s.mean < s.hi
  assert (s_many.hi - s_many.lo) < 0.5 * (s_few.hi - s_few.lo)
  # roughly the normal interval 2 * 1.96 * sd / sqrt(n)
  assert s_many.hi - s_many.lo == pytest.approx(2 * 1.96 * many.std() / np.sqrt(80), rel=0.15)
  assert scores.summarize_seeds(few, seed=0) == s_few  # seeded: reproducible
  assert scores.summarize_seeds(few, seed=1) != s_few


def test_seed_summary_drops_nan_and_handles_tiny_inputs():
  s = scores.summarize_seeds([0.2, float('nan'), 0.4])
  assert (s.n, s.n_nan, s.mean) == (2, 1, pytest.approx(0.3))
  one = scores.summarize_seeds([0.7])
  assert (one.mean, one.lo, one.hi) == (0.7, 0.7, 0.7)
  assert math.isnan(scores.summarize_seeds([float('nan')]).mean)
