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


def _ece_by_hand(probs, labels, num_bins=15):
  """The definition, bin by bin: (k/B, (k+1)/B], the first also holding 0."""
  conf, correct = probs.max(-1), probs.argmax(-1) == labels
  total = 0.0
  for k in range(num_bins):
    lo, hi = k / num_bins, (k + 1) / num_bins
    in_bin = (conf > lo) & (conf <= hi) | ((k == 0) & (conf == 0))
    if in_bin.any():
      total += in_bin.sum() * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return total / len(probs)


@pytest.mark.parametrize('num_classes', [2, 5])
def test_ece_is_the_definition_on_random_predictions(num_classes):
  rng = np.random.default_rng(num_classes)
  logits = rng.normal(size=(500, num_classes)) * 2
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  labels = rng.integers(0, num_classes, size=500)
  want = _ece_by_hand(probs, labels)
  assert want > 0.01  # not calibrated: the comparison means something
  assert scores.ece(probs, labels) == pytest.approx(want, rel=1e-9)
  assert scores.ece(probs, labels, num_bins=7) == pytest.approx(
      _ece_by_hand(probs, labels, 7), rel=1e-9)
  # a confidence a rounding step above 1 (float32 softmax) is the last bin's, not an error
  over = np.array([[1 + 1e-7, 0.0], [0.5, 0.5]])
  assert scores.ece(over, [0, 1]) == pytest.approx((abs(1 - 1) + abs(0 - 0.5)) / 2, rel=1e-6)


def test_multiclass_auroc_skips_a_class_absent_from_the_labels():
  rng = np.random.default_rng(3)
  y = rng.integers(0, 2, size=200)  # classes 0 and 1 only; class 2 never occurs
  probs = rng.dirichlet(np.ones(3), size=200)
  want = np.mean([roc_auc_score(y == c, probs[:, c]) for c in (0, 1)])
  assert scores.auroc(probs, y) == pytest.approx(want, rel=1e-12)
  assert math.isnan(scores.auroc(probs, np.zeros(200, int)))  # one class: no class has both


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


def test_seed_summary_is_the_student_t_interval():
  # hand-computed: values 0.1, 0.5, 0.3 -> mean 0.3, sd 0.2, se 0.2 / sqrt(3); t(0.975, 2) = 4.302653
  s = scores.summarize_seeds([0.1, 0.5, 0.3])
  half = 4.302652729911275 * 0.2 / np.sqrt(3)
  assert (s.n, s.n_nan, s.interval) == (3, 0, 't')
  assert s.mean == pytest.approx(0.3, rel=1e-12)
  assert (s.lo, s.hi) == (pytest.approx(0.3 - half, rel=1e-9), pytest.approx(0.3 + half, rel=1e-9))
  assert s.values == pytest.approx((0.1, 0.5, 0.3))
  rng = np.random.default_rng(2)
  few, many = rng.normal(0.5, 0.1, size=5), rng.normal(0.5, 0.1, size=80)
  s_few, s_many = scores.summarize_seeds(few), scores.summarize_seeds(many)
  assert s_few.lo < s_few.mean < s_few.hi
  assert (s_many.hi - s_many.lo) < 0.5 * (s_few.hi - s_few.lo)
  # a 90% interval is narrower than the 95% one around the same mean
  s90 = scores.summarize_seeds(few, level=0.9)
  assert s_few.lo < s90.lo < s90.hi < s_few.hi


def test_seed_summary_coverage_at_five_seeds_is_nominal():
  """The reason for t: at 5 seeds its 95% interval covers the true mean ~95% of the time, where a
  percentile bootstrap of the mean covers far less (about 85%)."""
  rng = np.random.default_rng(0)
  draws = rng.normal(0.7, 0.05, size=(2000, 5))
  hits = [s.lo <= 0.7 <= s.hi for s in map(scores.summarize_seeds, draws)]
  assert 0.93 < np.mean(hits) < 0.97


def test_no_interval_below_three_seeds_and_fmt():
  s = scores.summarize_seeds([0.2, float('nan'), 0.4])
  assert (s.n, s.n_nan, s.mean, s.interval) == (2, 1, pytest.approx(0.3), 'none')
  assert math.isnan(s.lo) and math.isnan(s.hi)
  assert scores.fmt_summary(s, 100) == '20.00, 40.00 (n=2: no interval)'
  one = scores.summarize_seeds([0.7])
  assert one.mean == 0.7 and math.isnan(one.lo)
  assert scores.fmt_summary(one._asdict()) == '0.70 (n=1: no interval)'
  same = scores.summarize_seeds([0.5, 0.5, 0.5])  # zero spread: a zero-width interval, no warning
  assert (same.lo, same.hi) == (0.5, 0.5)
  assert scores.fmt_summary(scores.summarize_seeds([0.1, 0.5, 0.3]), 100) == '30.00 [-19.68, 79.68]'
  assert scores.fmt_summary(scores.summarize_seeds([float('nan')])) == 'undefined'
  # a difference: signs on every figure (t(0.975, 2) = 4.302653, sd of (1, 1.5, 2.5) = 0.763763)
  d = scores.paired_difference([1.0, 2.0, 3.5], [0.0, 0.5, 1.0])
  assert scores.fmt_summary(d, digits=1, signed=True) == '+1.7 [-0.2, +3.6]'
  assert scores.fmt_summary(scores.summarize_seeds([-1.0, 1.0]), signed=True) == (
      '-1.00, +1.00 (n=2: no interval)')


def test_paired_difference_removes_the_shared_seed_variation():
  # two methods whose seeds move together: apart their intervals overlap, paired they do not
  base = np.array([0.60, 0.70, 0.65, 0.75, 0.68])
  a, b = base + np.array([0.020, 0.022, 0.018, 0.021, 0.019]), base
  sa, sb = scores.summarize_seeds(a), scores.summarize_seeds(b)
  assert sa.lo < sb.hi  # the unpaired intervals overlap
  d = scores.paired_difference(a, b)
  assert d.mean == pytest.approx(0.02, rel=1e-9) and 0 < d.lo < d.hi
  assert d == scores.summarize_seeds(a - b)
  nan = scores.paired_difference([0.5, float('nan'), 0.7, 0.6], [0.4, 0.5, 0.5, 0.5])
  assert nan.n == 3 and nan.n_nan == 1
  with pytest.raises(ValueError, match='one value per seed'):
    scores.paired_difference([1.0, 2.0], [1.0])
  assert math.isnan(scores.summarize_seeds([float('nan')]).mean)
