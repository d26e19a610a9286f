"""Instance-dependent label noise: `dict(name='instance', rate=0.4, strength=1.0, seed=0)`.

A simple documented version of Xia et al. (2020), "Part-dependent label noise" / instance-
dependent noise: how likely a label is to be wrong depends on the example's features. Each
example's flattened features x [D] are projected on a fixed random direction w ~ N(0, I_D)
(drawn from `seed` and D alone); with r_n the example's rank in x.w over the split (ties broken
by id), scaled to (0, 1), its flip probability is

    p_n = rate + spread * (2 r_n - 1),   spread = strength * min(rate, 1 - rate),

so p_n lies in [0, 1], rises with the projection, and averages exactly `rate`. A flipped label
goes to a class uniform among the others (Xia et al. also make the target depend on x). The
ranks depend on the set of rows, not their order: shuffling gives the same label per id. Vector
and image inputs only.
"""
import numpy as np

from w2s import label_noise
from w2s.errors import UserError


def flip_probability(inputs: np.ndarray, ids: np.ndarray, *, rate: float, strength: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(p [N] flip probabilities, z [N] projections); see module docstring."""
  x = np.asarray(inputs, np.float64).reshape(len(ids), -1)
  w = np.random.default_rng([seed, x.shape[1]]).standard_normal(x.shape[1])
  z = x @ w
  order = np.lexsort((ids, z))  # by z, then id
  rank = np.empty(len(z))
  rank[order] = (np.arange(len(z)) + 0.5) / max(len(z), 1)
  spread = strength * min(rate, 1 - rate)
  return rate + spread * (2 * rank - 1), z


def corrupt(*, labels, ids, num_classes, inputs, rate: float, strength: float = 1.0,
            seed: int = 0):
  """(noisy int64 [N], None: the transition depends on the instance); see module docstring."""
  rate, seed = label_noise.check_rate('instance', rate), label_noise.check_seed('instance', seed)
  if isinstance(strength, bool) or not isinstance(strength, (int, float)) \
      or not 0 <= strength <= 1:
    raise UserError(f"label_noise 'instance': strength={strength!r} must be in [0, 1]")
  if inputs is None:
    raise UserError("label_noise 'instance' needs vector or image inputs; for text use "
                    "'symmetric' or 'asymmetric'")
  if num_classes < 2:
    raise UserError("label_noise 'instance' needs at least 2 classes")
  p, _ = flip_probability(inputs, ids, rate=rate, strength=float(strength), seed=seed)
  flip = label_noise.uniforms(ids, seed, 0) < p
  other = label_noise.other_class(labels, label_noise.uniforms(ids, seed, 1), num_classes)
  return np.where(flip, other, labels), None
