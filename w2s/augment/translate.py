"""Pad-and-crop translation: `dict(name='translate', pad=4)` (or `pad=0.125` of the side).

Each image is padded by `pad` pixels on every side (reflect by default) and cropped back to
H x W at an offset drawn uniformly per example, so it moves by up to `pad` pixels in each
direction: the other half of FixMatch's weak view a(x) (Sohn et al. 2020: pad 4 of 32, i.e.
12.5%, reflect), the CIFAR recipe of He et al. 2016 ("Deep Residual Learning").

Output pixel (i, j) = input (i + dy - pad, j + dx - pad) with (dy, dx) in [0, 2 pad]^2, border
pixels from the padding mode ('reflect', 'edge' or 'constant' zeros).
"""
from typing import Callable

import jax
import jax.numpy as jnp

from w2s import augment
from w2s.errors import UserError

MODES = ('reflect', 'edge', 'constant')


def make(*, pad: int | float = 4, mode: str = 'reflect',
         field: str = 'x') -> Callable[[jax.Array, dict], dict]:
  """fn(rng, batch) translating batch[field] ([B, H, W, C]) by up to `pad` pixels each way."""
  pad = augment.pixels('translate', 'pad', pad)
  if mode not in MODES:
    raise UserError(f"augment 'translate': mode={mode!r} must be one of {', '.join(MODES)}")

  def fn(rng: jax.Array, batch: dict) -> dict:
    x = augment.images_of('translate', batch, field)
    b, h, w, c = x.shape
    n = augment.resolve(pad, h)
    if n == 0:
      return batch
    if mode == 'reflect' and n >= min(h, w):
      raise UserError(f"augment 'translate': pad={n} pixels must be < the image side {min(h, w)} "
                      "for mode='reflect'")
    padded = jnp.pad(x, ((0, 0), (n, n), (n, n), (0, 0)), mode=mode)  # [B, H+2n, W+2n, C]
    offsets = augment.flat(jax.random.randint, rng, (b, 2), minval=0, maxval=2 * n + 1)  # [B, 2]
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    return augment.replaced(batch, **{field: jax.vmap(crop)(padded, offsets)})
  return fn
