"""Weak-label cleaning on the strong model's frozen features (EleutherAI/w2s `probe.py`, `topo.py`).

Between the weak labels of B and the strong student, a cleaner reads the strong model's cached
features of B and B's weak soft labels and relabels rows, drops rows, or both. A cleaner is a
module here (or a dotted path `pkg.mod:fn`) whose entry point

    clean(features, labels, /, **hparams) -> (labels [N, C], keep [N] bool)

takes `features` float [N, D] (the strong backbone's pooled features) and `labels` float [N, C]
(the weak soft labels, rows summing to 1) positionally, so that neither can be set from a config,
and returns the new soft labels of every row (rows summing to 1) and which rows the student keeps.
A config names one as `clean = dict(name='knn', k=10)` in the weak_to_strong config
(`w2s.protocols.cleaning_stage`). Cleaners are plain numpy / scikit-learn on the host (float64):
they run once per seed, on B's few thousand rows, outside any jitted step.

Neighbourhoods are by cosine similarity (features L2-normalised; an all-zero row is similar to
nothing), a row is never its own neighbour, and ties in similarity go to the lower row index, so
the result is a function of the inputs' order and values alone.
"""
import numbers

import numpy as np

from w2s.errors import UserError

BLOCK_ROWS = 1024  # rows per block of the [block, N] similarity matrix (memory ~ 8 MB x N / 1k)


def integer(method: str, name: str, value, lo: int = 1) -> int:
  """`value` as an int >= lo, else a UserError naming it as the config does (`clean.<name>`)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
    raise UserError(f'clean.{name}={value!r} ({method}) must be an int >= {lo}')
  return int(value)


def number(method: str, name: str, value, lo: float, hi: float, *, open_lo: bool = False,
           open_hi: bool = False) -> float:
  """`value` as a float in [lo, hi] (an end left out with open_lo / open_hi), else a UserError."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  ok = ok and (lo < value if open_lo else lo <= value) and (value < hi if open_hi else value <= hi)
  if not ok:
    raise UserError(f'clean.{name}={value!r} ({method}) must be a number in '
                    f'{"(" if open_lo else "["}{lo:g}, {hi:g}{")" if open_hi else "]"}')
  return float(value)


def flag(method: str, name: str, value) -> bool:
  if not isinstance(value, bool):
    raise UserError(f'clean.{name}={value!r} ({method}) must be True or False')
  return value


def inputs(method: str, features, labels, *, min_rows: int = 2):
  """(features float64 [N, D], labels float64 [N, C]) checked: matching rows, finite, N >=
  `min_rows` (a cleaner's k needs k + 1 rows)."""
  x = np.asarray(features, np.float64)
  y = np.asarray(labels, np.float64)
  if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
    raise UserError(f'clean ({method}): features {x.shape} and labels {y.shape} must be [N, D] '
                    'and [N, C] with the same N')
  if len(x) < min_rows:
    raise UserError(f'clean ({method}) needs at least {min_rows} rows of B, got {len(x)}; lower '
                    'its k or give the splits more strong_train rows')
  if not (np.isfinite(x).all() and np.isfinite(y).all()):
    raise UserError(f'clean ({method}): the features or weak labels of B hold NaN / inf; check '
                    'the strong backbone and the weak stage')
  return x, y


def unit_rows(x: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norm > 0, norm, 1.0)


def neighbours(features: np.ndarray, k: int) -> np.ndarray:
  """int [N, k]: each row's k most cosine-similar other rows, most similar first (ties: lower
  index first), computed in blocks of BLOCK_ROWS rows. Needs N > k."""
  z = unit_rows(np.asarray(features, np.float64))
  n = len(z)
  out = np.empty((n, k), np.int64)
  for lo in range(0, n, BLOCK_ROWS):
    sim = z[lo:lo + BLOCK_ROWS] @ z.T                                   # [b, N]
    rows = np.arange(lo, min(lo + BLOCK_ROWS, n))
    sim[rows - lo, rows] = -np.inf                                      # never its own neighbour
    out[lo:lo + len(rows)] = np.argsort(-sim, axis=1, kind='stable')[:, :k]
  return out


def vote(labels: np.ndarray, nbrs: np.ndarray) -> np.ndarray:
  """[N, C]: the mean soft label of each row's neighbours `nbrs` [N, k]."""
  return labels[nbrs].mean(axis=1)


def disagrees(labels: np.ndarray, new: np.ndarray) -> np.ndarray:
  """bool [N]: the row's own hard label (argmax; ties to the lower class) differs from the new
  label's."""
  return labels.argmax(-1) != new.argmax(-1)


def apply(fn, features, labels, *, where: str, **hparams):
  """(labels float32 [N, C], keep bool [N]) of cleaner `fn`, checked: a cleaner that returns
  other shapes, rows that do not sum to 1 or keeps no row is a UserError."""
  n, c = np.shape(labels)
  new, keep = fn(features, labels, **hparams)
  new, keep = np.asarray(new, np.float64), np.asarray(keep)
  if new.shape != (n, c) or keep.shape != (n,) or keep.dtype != bool:
    raise UserError(f'{where} returned labels {new.shape} and keep {keep.shape} {keep.dtype}; it '
                    f'must return soft labels [{n}, {c}] and a bool mask [{n}]')
  if not (np.isfinite(new).all() and np.all(new >= -1e-6)
          and np.allclose(new.sum(-1), 1.0, atol=1e-4)):
    raise UserError(f'{where} returned labels that are not probabilities (rows of [N, C] '
                    '>= 0 summing to 1)')
  if not keep.any():
    raise UserError(f'{where} dropped every row of B, leaving the student nothing to train on; '
                    'lower its contamination or turn drop_disagreeing off')
  return new.astype(np.float32), keep


def report(name: str, before: np.ndarray, after: np.ndarray, keep: np.ndarray,
           gold: np.ndarray) -> dict:
  """What cleaning did to B: rows dropped, kept rows whose hard label changed, and (reporting
  only, never for selection) the weak labels' accuracy against B's ground truth `gold` [N]:
  before cleaning on every row, before on the kept rows, and after (the new labels, kept rows).
  Rows with an unknown label (-1) are left out of the accuracies."""
  gold = np.asarray(gold)
  known = gold >= 0
  acc = lambda probs, rows: (float((probs.argmax(-1) == gold)[rows].mean()) if rows.any()
                             else float('nan'))
  return {'method': name, 'n': int(len(keep)), 'n_dropped': int((~keep).sum()),
          'n_relabelled': int((disagrees(before, after) & keep).sum()),
          'weak_accuracy_before': acc(before, known),
          'weak_accuracy_before_kept': acc(before, known & keep),
          'weak_accuracy_after': acc(after, known & keep)}
