"""Cutout: `dict(name='cutout', size=16)` (pixels) or `size=0.5` (of the height), `value=0.`.

DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural Networks with Cutout":
a square of side `size` centred at a pixel drawn uniformly per example is set to `value` in every
channel; squares reaching past the border are clipped (so fewer pixels go), as in the paper.
FixMatch (Sohn et al. 2020) applies it after RandAugment in the strong view (`randaugment`'s
`cutout` hparam calls `cut` below). Draws are per batch, flat (see `w2s.augment.flat`).
"""
from typing import Callable

import jax
import jax.numpy as jnp

from w2s import augment


def centres(rng: jax.Array, b: int, h: int, w: int) -> jax.Array:
  """int32 [B, 2] (row, col) centres, uniform over the H x W pixels."""
  u = augment.flat(jax.random.uniform, rng, (b, 2))
  return jnp.minimum(jnp.floor(u * jnp.array([h, w])), jnp.array([h - 1, w - 1])).astype(jnp.int32)


def cut(x: jax.Array, centre: jax.Array, size: int, value: float) -> jax.Array:
  """Images x [B, H, W, C] with a size x size square about centre [B, 2] (clipped) set to value."""
  _, h, w, _ = x.shape
  top, left = centre[:, :1] - size // 2, centre[:, 1:] - size // 2                 # [B, 1]
  rows, cols = jnp.arange(h)[None], jnp.arange(w)[None]
  inside = (((rows >= top) & (rows < top + size))[:, :, None] &
            ((cols >= left) & (cols < left + size))[:, None, :])                 # [B, H, W]
  return jnp.where(inside[..., None], jnp.asarray(value, x.dtype), x)


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
    out = cut(x, centres(rng, *x.shape[:3]), n, value)
    return augment.replaced(batch, **{field: out})
  return fn
