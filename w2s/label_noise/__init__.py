"""Label-noise injectors: controlled noise on the TRAINING labels (registry kind 'label_noise').

A config section `label_noise = dict(name='symmetric', rate=0.4, seed=0)` corrupts the labels of
the training split only (never validation or test), so noise-robust losses (gce, elr, bootstrap)
can be compared at a known noise rate. An injector is a module `w2s/label_noise/<name>.py` with

    corrupt(*, labels, ids, num_classes, inputs, **hparams) -> (noisy int64 [N], expected [C, C])

labels int64 [N]; ids int64 [N]; inputs the raw input field [N, ...] (None for text); expected is
the transition matrix T[i, j] = P(noisy = j | true = i) the injector draws from (None when it
depends on the instance). Every random draw is a hash of (seed, example id, stream), never of the
row order, so an example gets the same noisy label in every run, split order and subset.

Shipped: `symmetric`, `asymmetric` (a matrix, CIFAR-style pairs, or the next class), `instance`
(flip probability from a seeded random projection of the features). `apply` runs one and returns
the record a run's results keep: the realised noise rate and transition matrix.
"""
import numpy as np

from w2s.data import base
from w2s.errors import UserError


def check_rate(noise: str, rate) -> float:
  """`rate` as a float in [0, 1), or a UserError."""
  if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) \
      or not 0 <= rate < 1:
    raise UserError(f"label_noise {noise!r}: rate={rate!r} must be a number in [0, 1)")
  return float(rate)


def check_seed(noise: str, seed) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise UserError(f"label_noise {noise!r}: seed={seed!r} must be a whole number >= 0")
  return int(seed)


def uniforms(ids: np.ndarray, seed: int, stream: int) -> np.ndarray:
  """float64 [N] in [0, 1): a splitmix64 hash of (seed, id, stream), one per example id."""
  x = np.asarray(ids).astype(np.uint64)
  with np.errstate(over='ignore'):
    x = x * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed) * np.uint64(0xBF58476D1CE4E5B9) \
        + np.uint64(stream) * np.uint64(0x94D049BB133111EB) + np.uint64(0x632BE59BD9B4E5B)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
  return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def other_class(labels: np.ndarray, u: np.ndarray, num_classes: int) -> np.ndarray:
  """int64 [N]: a class other than `labels`, uniform over the C - 1 others given u ~ U[0, 1)."""
  step = 1 + np.minimum((u * (num_classes - 1)).astype(np.int64), num_classes - 2)
  return (labels + step) % num_classes


def from_matrix(labels: np.ndarray, matrix: np.ndarray, u: np.ndarray) -> np.ndarray:
  """int64 [N]: noisy labels drawn from rows `matrix[labels]` by inverse CDF of u [N]."""
  cdf = np.cumsum(matrix[labels], axis=1)
  cdf[:, -1] = np.inf  # rounding never lets u fall past the last class
  return np.argmax(u[:, None] < cdf, axis=1).astype(np.int64)


def realised(labels: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
  """float64 [C, C]: the fraction of class i's examples that ended up labelled j (zero rows for
  classes absent from the split)."""
  counts = np.zeros((num_classes, num_classes))
  np.add.at(counts, (labels, noisy), 1)
  total = counts.sum(1, keepdims=True)
  return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def apply(plugin, raw: dict, *, num_classes: int, input_kind: str) -> tuple[dict, dict]:
  """(raw with its 'label' corrupted by `plugin` (an `options.Plugin`), the record for results)."""
  from w2s import options  # options imports the registry, which lists this package
  labels = np.asarray(raw['label'], np.int64)
  if np.any(labels < 0):
    raise UserError('label_noise: the training split has unknown labels (-1); noise is for '
                    'labelled training rows only')
  field = base.INPUT_FIELDS.get(input_kind)
  inputs = None if input_kind == 'text' or field not in raw else np.asarray(raw[field])
  noisy, expected = options.build(plugin, 'label_noise', labels=labels,
                                  ids=np.asarray(raw['id'], np.int64),
                                  num_classes=num_classes, inputs=inputs)
  noisy = np.asarray(noisy, np.int64)
  record = {**plugin.spec(), 'num_train': int(len(labels)),
            'num_flipped': int(np.sum(noisy != labels)),
            'realised_rate': float(np.mean(noisy != labels)) if len(labels) else 0.0,
            'transition': realised(labels, noisy, num_classes).round(6).tolist(),
            'expected_transition': None if expected is None
            else np.asarray(expected).round(6).tolist()}
  return {**raw, 'label': noisy}, record
