"""Overlap detection (Shin, Cooper & Sala 2024, "Weak-to-Strong Generalization Through the
Data-Centric Lens", ICLR 2025; their code: SprocketLab/datacentric_w2s,
`scripts/llm_probing_overlap_detection/overlap_probing_experiment.py`).

The paper's picture: an example may carry the *easy* pattern (which the weak model reads), the
*hard* pattern (which only the strong model reads), or both. Examples with both -- the
"overlap density" -- are where the weak model labels correctly AND the strong model meets the hard
pattern, so they drive weak-to-strong gains. Their overlap-detection algorithm (as their
script runs it) finds them from model outputs alone:

1. confidence c_i of the weak model on row i (binary: c = 2 |p_1 - 0.5|); sort the c_i and split
   the sorted sequence at one change point (ruptures `Binseg(model='l2')`, `n_bkps=1`, its defaults
   `min_size=2`, `jump=5`); with t = sorted(c)[change point], rows with c_i <= t are the
   low-confidence ("hard-only") rows H, the rest the high-confidence ("easy or overlap") rows E.
2. for each row i of E, the alignment a_i = max_{j in H} |cos(x_i, x_j)| of the strong model's
   features x; sort the a_i and split them at one change point the same way; with s =
   sorted(a)[change point], rows of E with a_i >= s are the overlap rows.

It uses the weak model's probabilities and the strong model's features of the rows, nothing else:
no labels of any kind. For C > 2 classes the confidence is (C max_c p_c - 1) / (C - 1), which is
2 |p_1 - 0.5| at C = 2 and, being an increasing affine map of max_c p_c, splits where max_c p_c
would (the l2 cost is unchanged up to one scale by affine maps).
"""
import numpy as np

from w2s.errors import UserError

JUMP, MIN_SIZE = 5, 2  # ruptures.Binseg's defaults, as their script leaves them
BLOCK_ROWS = 1024      # rows of E per block of the [|E|, |H|] cosine matrix


def _l2_cost(x: np.ndarray) -> float:
  """ruptures CostL2.error: the sum of squared deviations from the segment's mean."""
  return float(x.var() * len(x))


def change_point(sorted_values, *, jump: int = JUMP, min_size: int = MIN_SIZE,
                 what: str = 'values') -> int:
  """The one change point of a sequence under the l2 cost, as ruptures'
  `Binseg(model='l2', min_size, jump).fit(x).predict(n_bkps=1)[0]` finds it.

  Candidates are b in {0, jump, 2 jump, ...} with b >= min_size and n - b >= min_size; the one
  with the largest gain cost(x) - cost(x[:b]) - cost(x[b:]) wins, ties going to the larger b (as
  ruptures' `max` over (gain, b) pairs does).

  Args:
    sorted_values: [N] the sequence (the callers pass sorted scores).
    jump, min_size: ruptures' grid step and minimum segment length.
    what: what the values are, for the error message.

  Returns:
    b: the first segment is values[:b].
  """
  x = np.asarray(sorted_values, np.float64).ravel()
  n = len(x)
  min_size = max(int(min_size), 1)  # CostL2's own minimum is one sample
  # ruptures' sanity check for one breakpoint: n // jump >= 1 and ceil(min_size / jump) jump +
  # min_size <= n
  if n // jump < 1 or -(-min_size // jump) * jump + min_size > n:
    raise UserError(f'overlap detection needs at least {-(-min_size // jump) * jump + min_size} '
                    f'{what} to place a change point (jump={jump}, min_size={min_size}), got {n}; '
                    'use more test rows (splits.max_test) or a smaller overlap.jump')
  total = _l2_cost(x)
  gains = [(total - _l2_cost(x[:b]) - _l2_cost(x[b:]), b) for b in range(0, n, jump)
           if b >= min_size and n - b >= min_size]
  return max(gains)[1]


def confidence(probs) -> np.ndarray:
  """[N] weak confidence in [0, 1] from probabilities [N, C]: (C max p - 1) / (C - 1)."""
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or p.shape[1] < 2:
    raise UserError(f'overlap detection needs weak probabilities [N, C >= 2], got shape {p.shape}')
  c = p.shape[1]
  return (c * p.max(-1) - 1.0) / (c - 1.0)


def _unit(x: np.ndarray) -> np.ndarray:
  # a zero feature vector aligns with nothing (cos 0) instead of dividing by zero
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def alignment(features_easy, features_hard) -> np.ndarray:
  """[|E|] max_j |cos(x_i, x_j)| of each row of E over the rows of H ([|E|, D], [|H|, D])."""
  e, h = (_unit(np.asarray(f, np.float64)) for f in (features_easy, features_hard))
  out = np.empty(len(e))
  for i in range(0, len(e), BLOCK_ROWS):
    out[i:i + BLOCK_ROWS] = np.abs(e[i:i + BLOCK_ROWS] @ h.T).max(axis=1)
  return out


def detect(weak_probs, features, *, jump: int = JUMP, min_size: int = MIN_SIZE) -> dict:
  """The overlap rows of a set of examples (the module docstring's two steps).

  Args:
    weak_probs: [N, C] the weak model's probabilities of the rows.
    features: [N, D] the strong model's features of the same rows.
    jump, min_size: the change-point grid (ruptures' Binseg defaults 5 and 2).

  Returns:
    {'overlap': bool [N], 'hard': bool [N] (low weak confidence), 'easy': bool [N] (high
    confidence, not overlap), 'confidence': [N], 'align': [N] (NaN on hard rows),
    'confidence_threshold': t, 'align_threshold': s (NaN when no row is confident)}.
    With no high-confidence row (every confidence tied at the threshold) no row is overlap.
  """
  conf = confidence(weak_probs)
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or len(x) != len(conf):
    raise UserError(f'overlap detection needs features [N, D] for the N={len(conf)} rows, got '
                    f'shape {x.shape}')
  ordered = np.sort(conf)
  t = float(ordered[change_point(ordered, jump=jump, min_size=min_size, what='rows')])
  hard = conf <= t
  align = np.full(len(conf), np.nan)
  overlap = np.zeros(len(conf), bool)
  s = float('nan')
  if (~hard).any():
    align[~hard] = alignment(x[~hard], x[hard])
    ordered = np.sort(align[~hard])
    s = float(ordered[change_point(ordered, jump=jump, min_size=min_size,
                                   what='high-confidence rows')])
    overlap = ~hard & (align >= s)
  return {'overlap': overlap, 'hard': hard, 'easy': ~hard & ~overlap, 'confidence': conf,
          'align': align, 'confidence_threshold': t, 'align_threshold': s}
