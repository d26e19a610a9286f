"""Cutout: `dict(name='cutout', size=16)` (pixels) or `size=0.5` (of the height), `value=0.`.

DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural Networks with Cutout":
a square of side `size` centred at a pixel drawn uniformly per example is set to `value` in every
channel; squares reaching past the border are clipped (so fewer pixels go), as in the paper.
FixMatch (Sohn et al. 2020) applies it after RandAugment in the strong view (`randaugment`'s
`cutout` hparam calls `cut` below).
"""
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from w2s import augment


def cut(rng: jax.Array, x: jax.Array, size: int, value: float) -> jax.Array:
  """One image x [H, W, C] with a size x size square (centre uniform, clipped) set to value."""
  h, w, _ = x.shape
  cy, cx = jax.random.randint(rng, (2,), 0, jnp.array([h, w]))
  top, left = cy - size // 2, cx - size // 2
  rows, cols = jnp.arange(h), jnp.arange(w)
  inside = (((rows >= top) & (rows < top + size))[:, None] &
            ((cols >= left) & (cols < left + size))[None, :])              # [H, W]
  return jnp.where(inside[:, :, None], jnp.asarray(value, x.dtype), x)


def make(*, size: int | float = 0.5, value: float = 0.0,
         field: str = 'x') -> Callable[[jax.Array, dict], dict]:
  """fn(rng, batch) cutting one square out of each image of batch[field] ([B, H, W, C])."""
  size = augment.pixels('cutout', 'size', size)
  value = augment.number('cutout', 'value', value, 0.0, 1.0)

  def fn(rng: jax.Array, batch: dict) -> dict:
    x = augment.images_of('cutout', batch, field)
    n = augment.resolve(size, x.shape[1])
    if n == 0:
      return batch
    keys = jax.random.split(rng, x.shape[0])
    out = jax.vmap(functools.partial(cut, size=n, value=value))(keys, x)
    return augment.replaced(batch, **{field: out})
  return fn
