"""Sparse pixels: `dict(name='sparse_pixels', pixels=6, nonzero=True)`, the judge's view in the
MNIST debate (Irving, Christiano & Amodei 2018, "AI safety via debate", Sec. 3).

The judge of the paper is a classifier that sees only k pixels of a digit, trained on random
masks; its input is two planes, the masked image and the mask. Here `x` is [B, H, W, 2]: channel
0 the image in [0, 1], channel 1 the pixels that may be revealed (all ones for a clean example).
Per example and step, `pixels` of the revealable pixels are drawn uniformly without replacement
(with `nonzero=True` only pixels whose value is > 0, as the paper's judge was trained on random
nonzero pixels); the output is [image * m, m] for the drawn mask m. An example with fewer
revealable pixels than `pixels` shows all of them. `random_masks` is what the debate protocol
uses for its "k random pixels" baseline, so training and evaluation draw masks the same way.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from w2s import augment
from w2s.errors import UserError


def revealable(x: jax.Array, nonzero: bool) -> jax.Array:
  """bool [B, H, W]: pixels that may be revealed (channel 1 > 0, and the value > 0 if nonzero)."""
  allowed = x[..., 1] > 0
  return allowed & (x[..., 0] > 0) if nonzero else allowed


def random_masks(rng: jax.Array, allowed: jax.Array, pixels: int) -> jax.Array:
  """float32 [B, H, W] masks with min(pixels, #allowed) ones per row, uniform among `allowed`.

  The top `pixels` of i.i.d. uniforms over the allowed pixels is a uniform draw without
  replacement; draws are flat over the global batch (`augment.flat`), so every device layout
  gives the same masks."""
  b, h, w = allowed.shape
  flat_allowed = allowed.reshape(b, h * w)
  u = augment.flat(jax.random.uniform, rng, (b, h * w))
  _, idx = jax.lax.top_k(jnp.where(flat_allowed, u, -1.0), pixels)          # [B, k]
  picked = jnp.zeros((b, h * w), bool).at[jnp.arange(b)[:, None], idx].set(True)
  return (picked & flat_allowed).astype(jnp.float32).reshape(b, h, w)


def masked_input(image: jax.Array, mask: jax.Array) -> jax.Array:
  """The judge's input [B, H, W, 2] = [image * mask, mask] of images and masks [B, H, W]."""
  return jnp.stack([image * mask, mask], axis=-1)


def make(*, pixels: int = 6, nonzero: bool = True,
         field: str = 'x') -> Callable[[jax.Array, dict], dict]:
  """fn(rng, batch) revealing `pixels` random pixels of each [image, mask] pair of batch[field]."""
  pixels = augment.whole('sparse_pixels', 'pixels', pixels, minimum=1)
  if not isinstance(nonzero, bool):
    raise UserError(f"augment 'sparse_pixels': nonzero={nonzero!r} must be True or False")

  def fn(rng: jax.Array, batch: dict) -> dict:
    x = augment.field_of('sparse_pixels', batch, field, ndim=4, floating=True,
                         what=' ([B, H, W, 2]: the image and the mask of revealable pixels)')
    if x.shape[-1] != 2:
      raise UserError(f"augment 'sparse_pixels': batch[{field!r}] has {x.shape[-1]} channels; it "
                      'needs 2 (the image and the mask of revealable pixels, as the pixel_debate '
                      'protocol builds them)')
    k = min(pixels, x.shape[1] * x.shape[2])
    mask = random_masks(rng, revealable(x, nonzero), k)
    return augment.replaced(batch, **{field: masked_input(x[..., 0], mask).astype(x.dtype)})
  return fn
