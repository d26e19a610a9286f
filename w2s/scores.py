"""Evaluation metrics for weak-to-strong runs (host side, plain numpy).

Inputs are arrays of real examples only (drop padding before calling):
`probs` [N, C] predicted probabilities (argmax-based metrics also accept
logits), `labels` [N] int class ids or [N, C] one-hot / soft labels (argmax).

* accuracy, auroc (binary; multi-class one-vs-rest macro), ece (15 bins);
* pgr: performance gap recovered (Burns et al. 2023, "Weak-to-Strong
  Generalization", arXiv:2312.09390), NaN with a reason when undefined;
* agreement and accuracy_by_weak_correctness: how much of the supervisor the
  student imitates (Burns et al. 2023, Sec. 5.1);
* summarize_seeds / paired_difference: mean over seeds and its Student-t interval (scipy's), none
  below MIN_SEEDS_FOR_INTERVAL values; fmt_summary prints either form.
"""
import warnings
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


def binary_auroc(scores, positive) -> float:
  """Area under the ROC curve, `sklearn.metrics.roc_auc_score` (ties count one half).

  Args:
    scores: [N] higher = more likely positive.
    positive: [N] bool.

  Returns:
    AUROC; NaN when only one class is present (sklearn warns and returns NaN; asked here first,
    so no warning).
  """
  from sklearn.metrics import roc_auc_score
  positive = np.asarray(positive, bool)
  if positive.all() or not positive.any():
    return float('nan')
  return float(roc_auc_score(positive, np.asarray(scores, np.float64)))


def auroc(probs, labels) -> float:
  """AUROC: binary for C = 2, else one-vs-rest macro average (sklearn's 'ovr'/'macro').

  Multi-class is the mean of each class's binary AUROC (`binary_auroc` of p_c, class c vs the
  rest), which is what `roc_auc_score(multi_class='ovr', average='macro')` computes; called per
  class so that a class absent from `labels` is skipped instead of failing the whole score, and
  scores need not sum to one.

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

  scikit-learn has no ECE (1.9). Its `calibration_curve(strategy='uniform')` bins exactly so
  (searchsorted on the interior edges) and gives each non-empty bin's accuracy and mean
  confidence, which are read from it here (the bins of the reliability diagrams,
  `w2s.plots.reliability`); it does not return the bins' sizes, which ECE weights by, so those
  are counted with its rule.

  Args:
    probs: [N, C] probabilities.
    labels: [N] int or [N, C].
    num_bins: number of bins (15 as in Guo et al. 2017).

  Returns:
    ECE in [0, 1]; NaN for N = 0.
  """
  from sklearn.calibration import calibration_curve
  probs = np.asarray(probs, np.float64)
  if len(probs) == 0:
    return float('nan')
  conf = np.clip(probs.max(-1), 0.0, 1.0)  # float rounding may pass 1; sklearn refuses that
  correct = (probs.argmax(-1) == _class_ids(labels)).astype(np.int64)
  acc, mean_conf = calibration_curve(correct, conf, n_bins=num_bins, strategy='uniform',
                                     pos_label=1)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=num_bins)
  counts = counts[counts > 0]  # calibration_curve's bins: the non-empty ones, in order
  return float(np.sum(counts * np.abs(acc - mean_conf)) / len(probs))


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


# A t-interval from 2 seeds has 1 degree of freedom (12.7 x the standard error wide), a bootstrap
# of 2 values is their [min, max]: below 3 values a summary carries the values, no interval.
MIN_SEEDS_FOR_INTERVAL = 3


class SeedSummary(NamedTuple):
  """Mean over seeds and its confidence interval [lo, hi] (NaN when n < MIN_SEEDS_FOR_INTERVAL)."""
  mean: float
  lo: float
  hi: float
  n: int  # finite values used
  n_nan: int  # values dropped as NaN (e.g. undefined PGR)
  values: tuple = ()  # the finite values, in seed order
  interval: str = 't'  # how [lo, hi] was computed: 't' (Student-t of the mean) or 'none'


def summarize_seeds(values, *, level: float = 0.95) -> SeedSummary:
  """Mean and Student-t confidence interval of the mean over seeds.

  Seeds are few (3-10) and their means roughly normal, the case the t-interval is for; a
  percentile bootstrap of so few values covers well under its nominal level (at 2 values it is
  [min, max]). The interval is scipy's `ttest_1samp(...).confidence_interval`.

  Args:
    values: [S] one number per seed; NaN entries (undefined PGR) are dropped and
      counted in n_nan.
    level: confidence level of the interval.

  Returns:
    SeedSummary; lo = hi = NaN (interval 'none') below MIN_SEEDS_FOR_INTERVAL finite values, all
    NaN for none.
  """
  values = np.asarray(values, np.float64).ravel()
  finite = values[~np.isnan(values)]
  n, n_nan = len(finite), len(values) - len(finite)
  vals = tuple(float(v) for v in finite)
  if n == 0:
    return SeedSummary(float('nan'), float('nan'), float('nan'), 0, n_nan, (), 'none')
  mean = float(finite.mean())
  if n < MIN_SEEDS_FOR_INTERVAL:
    return SeedSummary(mean, float('nan'), float('nan'), n, n_nan, vals, 'none')
  if np.ptp(finite) == 0:  # identical values: a zero-width interval (scipy warns and may give NaN)
    return SeedSummary(mean, mean, mean, n, n_nan, vals, 't')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # near-identical values: precision warning
    from scipy import stats as sp_stats  # here: ~0.7 s of every CLI start-up otherwise
    ci = sp_stats.ttest_1samp(finite, 0.0).confidence_interval(level)
  return SeedSummary(mean, float(ci.low), float(ci.high), n, n_nan, vals, 't')


def paired_difference(a, b, *, level: float = 0.95) -> SeedSummary:
  """a - b per seed (two methods run on the same seeds), summarised like `summarize_seeds`.

  The paired interval removes the seed-to-seed variation both methods share (same splits, same
  weak labels), so it is the one to quote for "method a beats method b". Seeds where either value
  is NaN are dropped.
  """
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f'paired_difference needs one value per seed on both sides, got {a.shape} '
                     f'and {b.shape}')
  return summarize_seeds(a - b, level=level)


def fmt_summary(s, scale: float = 1.0, digits: int = 2, signed: bool = False) -> str:
  """'72.35 [71.90, 72.80]', or '69.50, 70.10 (n=2: no interval)', or 'undefined' (no value);
  signed: '+2.75 [+1.79, +3.72]' (a difference).

  s: a SeedSummary or its dict (as stored in results.json)."""
  s = s._asdict() if hasattr(s, '_asdict') else s
  if not s.get('n') or np.isnan(s['mean']):
    return 'undefined'
  f = f'{"+" if signed else ""}.{digits}f'
  if s.get('lo') is None or np.isnan(s['lo']):
    values = s.get('values') or [s['mean']]
    return (', '.join(f'{scale * v:{f}}' for v in values)
            + f' (n={s["n"]}: no interval)')
  return f'{scale * s["mean"]:{f}} [{scale * s["lo"]:{f}}, {scale * s["hi"]:{f}}]'
