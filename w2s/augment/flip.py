"""Random horizontal flip: `dict(name='flip', p=0.5)`.

Each image is mirrored left-right with probability p, independently per example: half of the
weak view a(x) of FixMatch (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning
with Consistency and Confidence"; flip + translate), as in the standard CIFAR recipe (He et al.
2016). Not for digits or text-like images, where a mirror changes the class.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from w2s import augment


def make(*, p: float = 0.5, field: str = 'x') -> Callable[[jax.Array, dict], dict]:
  """fn(rng, batch) flipping batch[field] ([B, H, W, C] in [0, 1]) along W with probability p."""
  p = augment.number('flip', 'p', p, 0.0, 1.0)

  def fn(rng: jax.Array, batch: dict) -> dict:
    x = augment.images_of('flip', batch, field)
    flip = jax.random.bernoulli(rng, p, (x.shape[0],))                   # [B]
    out = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    return augment.replaced(batch, **{field: out})
  return fn
