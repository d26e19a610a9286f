"""Evaluation metrics for weak-to-strong runs (host side, plain numpy).

Inputs are arrays of real examples only (drop padding before calling):
`probs` [N, C] predicted probabilities (argmax-based metrics also accept
logits), `labels` [N] int class ids or [N, C] one-hot / soft labels (argmax).

* accuracy, auroc (binary; multi-class one-vs-rest macro), ece (15 bins);
* pgr: performance gap recovered (Burns et al. 2023, "Weak-to-Strong
  Generalization", arXiv:2312.09390), NaN with a reason when undefined;
* agreement and accuracy_by_weak_correctness: how much of the supervisor the
  student imitates (Burns et al. 2023, Sec. 5.1);
* summarize_seeds: mean and a seeded percentile-bootstrap CI over seeds
  (Efron & Tibshirani 1993).
"""
from typing import NamedTuple

import numpy as np

ECE_BINS = 15


def _class_ids(labels) -> np.ndarray:
  """[N] int class ids from [N] ints or [N, C] one-hot/soft labels."""
  labels = np.asarray(labels)
  return labels.argmax(-1) if labels.ndim == 2 else labels.astype(np.int64)


def accuracy(probs, labels) -> float:
  """Fraction of rows whose argmax matches the label; probs [N, C], labels [N] or [N, C]."""
  probs = np.asarray(probs)
  if len(probs) == 0:
    return float('nan')
  return float(np.mean(probs.argmax(-1) == _class_ids(labels)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of x [N], ties sharing their average rank."""
  order = np.argsort(x, kind='mergesort')
  ranks = np.empty(len(x), np.float64)
  ranks[order] = np.arange(1, len(x) + 1)
  _, inverse = np.unique(x, return_inverse=True)
  return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]


def binary_auroc(scores, positive) -> float:
  """Area under the ROC curve (Mann-Whitney U with tie correction).

  Args:
    scores: [N] higher = more likely positive.
    positive: [N] bool.

  Returns:
    AUROC; NaN when only one class is present.
  """
  scores = np.asarray(scores, np.float64)
  positive = np.asarray(positive, bool)
  n_pos, n_neg = int(positive.sum()), int((~positive).sum())
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  ranks = _average_ranks(scores)
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(probs, labels) -> float:
  """AUROC: binary for C = 2, else one-vs-rest macro average (sklearn's 'ovr'/'macro').

  Args:
    probs: [N, C] probabilities (C = 2 also accepts logits: the score is
      probs[:, 1] - probs[:, 0], monotone in p_1 either way), or [N] class-1 scores.
    labels: [N] int or [N, C].

  Returns:
    AUROC; classes without both positives and negatives are skipped, NaN if none remain.
  """
  probs = np.asarray(probs, np.float64)
  y = _class_ids(labels)
  if probs.ndim == 1:
    return binary_auroc(probs, y == 1)
  if probs.shape[1] == 2:
    return binary_auroc(probs[:, 1] - probs[:, 0], y == 1)
  per_class = [binary_auroc(probs[:, c], y == c) for c in range(probs.shape[1])]
  per_class = [a for a in per_class if not np.isnan(a)]
  return float(np.mean(per_class)) if per_class else float('nan')


def ece(probs, labels, num_bins: int = ECE_BINS) -> float:
  """Expected calibration error with equal-width confidence bins (Guo et al. 2017).

  ECE = sum_b |B_b| / N * |acc(B_b) - mean confidence(B_b)|, confidence =
  max_c p_c, bins (k/num_bins, (k+1)/num_bins] (the first also holds 0).

  Args:
    probs: [N, C] probabilities.
    labels: [N] int or [N, C].
    num_bins: number of bins (15 as in Guo et al. 2017).

  Returns:
    ECE in [0, 1]; NaN for N = 0.
  """
  probs = np.asarray(probs, np.float64)
  if len(probs) == 0:
    return float('nan')
  conf = probs.max(-1)
  correct = (probs.argmax(-1) == _class_ids(labels)).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  bins = np.searchsorted(edges[1:-1], conf, side='left')  # edges[b] < conf <= edges[b + 1]
  total = 0.0
  for b in np.unique(bins):
    in_bin = bins == b
    total += in_bin.sum() * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return float(total / len(probs))


class PGR(NamedTuple):
  """Performance gap recovered; value is NaN and reason says why when undefined."""
  value: float
  reason: str | None = None


def pgr(acc_weak: float, acc_student: float, acc_ceiling: float,
        min_gap: float = 1e-6) -> PGR:
  """PGR = (acc_student - acc_weak) / (acc_ceiling - acc_weak) (Burns et al. 2023).

  Args:
    acc_weak: test accuracy of the weak supervisor.
    acc_student: test accuracy of the weak-to-strong student.
    acc_ceiling: test accuracy of the strong model trained on ground truth.
    min_gap: the ceiling must beat the weak model by more than this, else PGR
      is undefined (no division by ~0).

  Returns:
    PGR(value, reason): reason is None when defined.
  """
  accs = (acc_weak, acc_student, acc_ceiling)
  if not all(np.isfinite(accs)):
    return PGR(float('nan'), f'an accuracy is not finite (weak, student, ceiling = {accs})')
  gap = acc_ceiling - acc_weak
  if gap <= min_gap:
    return PGR(float('nan'), f'ceiling {acc_ceiling:.4f} does not beat weak {acc_weak:.4f} '
                             f'(gap {gap:.2g} <= {min_gap:g}); PGR is undefined')
  return PGR(float((acc_student - acc_weak) / gap))


def agreement(student_probs, weak_probs) -> float:
  """Fraction of rows where the student's argmax equals the supervisor's; [N, C] each."""
  return accuracy(student_probs, np.asarray(weak_probs).argmax(-1))


def accuracy_by_weak_correctness(student_probs, weak_probs, labels) -> dict[str, float]:
  """Student accuracy where the weak label is wrong vs right (Burns et al. 2023, Sec. 5.1).

  Low accuracy on the weak-wrong rows means the student imitates the weak
  supervisor's errors.

  Args:
    student_probs: [N, C] student probabilities.
    weak_probs: [N, C] weak supervisor probabilities.
    labels: [N] int or [N, C] ground truth.

  Returns:
    dict with acc_weak_wrong, acc_weak_right (NaN if the group is empty),
    n_weak_wrong, n_weak_right.
  """
  student_probs, weak_probs = np.asarray(student_probs), np.asarray(weak_probs)
  y = _class_ids(labels)
  weak_right = weak_probs.argmax(-1) == y
  return {
      'acc_weak_wrong': accuracy(student_probs[~weak_right], y[~weak_right]),
      'acc_weak_right': accuracy(student_probs[weak_right], y[weak_right]),
      'n_weak_wrong': int((~weak_right).sum()),
      'n_weak_right': int(weak_right.sum()),
  }


class SeedSummary(NamedTuple):
  """Mean over seeds and its bootstrap confidence interval [lo, hi]."""
  mean: float
  lo: float
  hi: float
  n: int  # finite values used
  n_nan: int  # values dropped as NaN (e.g. undefined PGR)


def summarize_seeds(values, *, level: float = 0.95, num_resamples: int = 10_000,
                    seed: int = 0) -> SeedSummary:
  """Mean and percentile-bootstrap CI of the mean over seeds.

  Args:
    values: [S] one number per seed; NaN entries (undefined PGR) are dropped and
      counted in n_nan.
    level: confidence level of the interval.
    num_resamples: bootstrap resamples.
    seed: seed of the resampling (the CI is reproducible).

  Returns:
    SeedSummary; lo = hi = mean for one value, all NaN for none.
  """
  values = np.asarray(values, np.float64).ravel()
  finite = values[~np.isnan(values)]
  n, n_nan = len(finite), len(values) - len(finite)
  if n == 0:
    return SeedSummary(float('nan'), float('nan'), float('nan'), 0, n_nan)
  mean = float(finite.mean())
  rng = np.random.default_rng(seed)
  means = finite[rng.integers(0, n, size=(num_resamples, n))].mean(axis=1)
  lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
  return SeedSummary(mean, float(lo), float(hi), n, n_nan)
