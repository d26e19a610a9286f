"""Data augmentations: pure JAX functions of (rng, batch) run in the jitted step (kind 'augment').

A plug-in is a module `w2s/augment/<name>.py` with `make(**hparams) -> fn`, where

    fn(rng: jax.Array, batch: dict) -> dict

returns the batch with its input field transformed and every other field untouched (the same
array objects). `fn` is pure and jittable: static shapes, randomness only from `rng`, so the same
key gives the same views and a resumed run draws the same augmentations; it works under `jax.jit`
on a sharded global batch (per-example draws come from `rng` alone, never from the device layout)
and under `jax.vmap` over extra leading axes. Bad hparams are a `UserError` at `make` time; a
batch without the field a plug-in needs is a `UserError` when `fn` is traced.

Config: `train.augment = dict(name='chain', ops=[dict(name='flip'), dict(name='translate', pad=4)])`
(FixMatch's weak view a(x)); the strong view A(x) is `dict(name='randaugment')` (RandAugment +
cutout). Shipped, by input ('x' float32 [B, H, W, C] images in [0, 1]; 'input_ids' /
'attention_mask' int32 [B, T] text; 'x' float32 [B, D] vectors, see `w2s.data.featurize`):

  images:  flip, translate, cutout, randaugment
  [image, mask] pairs ([B, H, W, 2]): sparse_pixels (the pixel-debate judge's k random pixels)
  text:    tokens (word dropout, BERT-style masking, span deletion)
  vectors: features (Gaussian noise, feature dropout)
  any:     chain (several of the above in order)

The helpers below are theirs: hparam checks (one error line naming the option and its range)
and trace-time batch checks.
"""
import math
import numbers

import jax
import jax.numpy as jnp

from w2s.errors import UserError


def number(aug: str, name: str, value, lo: float, hi: float, *, open_hi: bool = False) -> float:
  """`value` as a float in [lo, hi] (or [lo, hi) with open_hi), else a UserError."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if not ok or not (lo <= value < hi if open_hi else lo <= value <= hi):
    raise UserError(f'augment {aug!r}: {name}={value!r} must be a number in [{lo:g}, {hi:g}'
                    f'{")" if open_hi else "]"}')
  return float(value)


def whole(aug: str, name: str, value, minimum: int = 0, maximum: int | None = None) -> int:
  """`value` as an int in [minimum, maximum], else a UserError."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
      or (maximum is not None and value > maximum)):
    top = '' if maximum is None else f' and <= {maximum}'
    raise UserError(f'augment {aug!r}: {name}={value!r} must be a whole number >= {minimum}{top}')
  return int(value)


def pixels(aug: str, name: str, value) -> int | float:
  """A length: an int number of pixels >= 0, or a float fraction in [0, 1] of the image side."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    pass
  elif isinstance(value, numbers.Integral) and value >= 0:
    return int(value)
  elif not isinstance(value, numbers.Integral) and 0.0 <= value <= 1.0:
    return float(value)
  raise UserError(f'augment {aug!r}: {name}={value!r} must be an int number of pixels >= 0 or a '
                  'float fraction of the image side in [0, 1]')


def resolve(length: int | float, side: int) -> int:
  """`pixels(...)` -> pixels of an image side of `side` (fractions rounded to the nearest)."""
  return length if isinstance(length, int) else int(round(length * side))


def field_of(aug: str, batch: dict, field: str, *, ndim: int | None = None, floating: bool = False,
             what: str = '') -> jax.Array:
  """`batch[field]` checked at trace time: present, of rank `ndim` (None: any >= 2), float."""
  if not isinstance(batch, dict) or field not in batch:
    have = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
    raise UserError(f'augment {aug!r} needs batch field {field!r}{what}; the batch has {have}')
  x = batch[field]
  rank_ok = x.ndim == ndim if ndim is not None else x.ndim >= 2
  if not rank_ok or (floating and not jnp.issubdtype(x.dtype, jnp.floating)):
    want = f'rank {ndim}' if ndim is not None else 'rank >= 2'
    raise UserError(f'augment {aug!r}: batch[{field!r}] is {x.dtype} {tuple(x.shape)}; it needs '
                    f'{"a float array of " if floating else ""}{want}{what}')
  return x


def images_of(aug: str, batch: dict, field: str = 'x') -> jax.Array:
  """Images float [B, H, W, C] in [0, 1] of `batch[field]` (UserError at trace time otherwise)."""
  return field_of(aug, batch, field, ndim=4, floating=True,
                  what=' (images float32 [B, H, W, C] in [0, 1]; flat [B, D] vectors take '
                       "'features')")


def flat(sampler, rng: jax.Array, shape: tuple[int, ...], **kw) -> jax.Array:
  """`sampler(rng, shape=shape, **kw)` drawn flat and reshaped (e.g. `jax.random.uniform`).

  The same numbers for every device layout (threefry is partitionable); XLA:CPU compiles the
  threefry of an N-d shape 3-5x slower than a flat one, which dominates these small programs.
  """
  return sampler(rng, shape=(math.prod(shape),), **kw).reshape(shape)


def replaced(batch: dict, **fields) -> dict:
  """A new batch dict: `batch` with `fields` replaced, the other arrays shared."""
  return {**batch, **fields}
