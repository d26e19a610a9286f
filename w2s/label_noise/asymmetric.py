"""Class-conditional (asymmetric) label noise: a transition matrix T[i, j] = P(noisy j | true i).

Exactly one way to give T (else the next class):

* `matrix=[[...], ...]`: the C x C matrix itself; rows must sum to 1 (`rate` not given);
* `pairs=[[src, dst], ...]`: class src becomes dst with probability `rate`; the CIFAR-10 flips of
  Patrini et al. (2017) are `pairs=[[9, 1], [2, 0], [3, 5], [5, 3], [4, 7]]` (truck -> automobile,
  bird -> airplane, cat <-> dog, deer -> horse); other classes are untouched;
* neither: every class c becomes (c + 1) % C with probability `rate`.

`dict(name='asymmetric', rate=0.4, pairs=[[3, 5], [5, 3]], seed=0)`.
"""
import numpy as np

from w2s import label_noise
from w2s.errors import UserError


def _matrix(matrix, c: int) -> np.ndarray:
  try:
    t = np.asarray(matrix, np.float64)
  except (TypeError, ValueError):
    t = None
  if t is None or t.shape != (c, c):
    raise UserError(f"label_noise 'asymmetric': matrix must be {c} x {c} numbers, got "
                    f'{np.shape(matrix) if t is not None else matrix!r}')
  if np.any(t < 0) or not np.allclose(t.sum(1), 1, atol=1e-6):
    bad = [i for i, s in enumerate(t.sum(1)) if abs(s - 1) > 1e-6 or np.any(t[i] < 0)]
    raise UserError(f"label_noise 'asymmetric': matrix rows {bad} are not probabilities "
                    '(entries >= 0 summing to 1)')
  return t


def _pairs(pairs, c: int, rate: float) -> np.ndarray:
  items = list(pairs.items()) if hasattr(pairs, 'items') else list(pairs)
  t = np.eye(c)
  for item in items:
    ok = isinstance(item, (list, tuple)) and len(item) == 2
    src, dst = (item if ok else (None, None))
    ok = ok and all(not isinstance(v, bool) and isinstance(v, (int, np.integer)) or
                    (isinstance(v, str) and v.isdigit()) for v in (src, dst))
    if not ok:
      raise UserError(f"label_noise 'asymmetric': pairs must be [[src, dst], ...] of class "
                      f'numbers, got {item!r}')
    src, dst = int(src), int(dst)
    if not (0 <= src < c and 0 <= dst < c):
      raise UserError(f"label_noise 'asymmetric': unknown class in pair [{src}, {dst}]; "
                      f'classes are 0..{c - 1}')
    if src == dst or t[src, src] != 1:
      raise UserError(f"label_noise 'asymmetric': pair [{src}, {dst}] maps a class to itself "
                      'or a class given twice')
    t[src, src], t[src, dst] = 1 - rate, rate
  return t


def corrupt(*, labels, ids, num_classes, inputs, rate=None, pairs=None, matrix=None,
            seed: int = 0):
  """(noisy int64 [N], the transition matrix [C, C]); see module docstring."""
  del inputs
  seed = label_noise.check_seed('asymmetric', seed)
  if matrix is not None:
    if pairs is not None or rate is not None:
      raise UserError("label_noise 'asymmetric': give matrix=... alone (no rate or pairs)")
    t = _matrix(matrix, num_classes)
  else:
    rate = label_noise.check_rate('asymmetric', rate)
    t = (_pairs(pairs, num_classes, rate) if pairs is not None else
         _pairs([[i, (i + 1) % num_classes] for i in range(num_classes)], num_classes, rate))
  return label_noise.from_matrix(labels, t, label_noise.uniforms(ids, seed, 0)), t
