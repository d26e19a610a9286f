"""Noise for cached features and vectors: `dict(name='features', sigma=0.1, p=0.1)`.

'x' float [B, D] (or any float [B, ...]) gets, in this order,
  * Gaussian noise x + sigma * N(0, 1) (sigma > 0; the input-noise regulariser of Bishop 1995,
    "Training with Noise is Equivalent to Tikhonov Regularization", and the Pi-model's / Mean
    Teacher's input noise, Laine & Aila 2017, Tarvainen & Valpola 2017), then
  * feature dropout: each entry zeroed with probability p (Srivastava et al. 2014) and the kept
    ones scaled by 1 / (1 - p) (`rescale=True`, the default: "inverted" dropout keeps E[x], so
    the clean inputs seen at evaluation match the training inputs on average; False keeps the
    kept values as they are, e.g. for counts or indicators that must stay on their scale).
sigma = p = 0 is the identity.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from w2s import augment


def make(*, sigma: float = 0.0, p: float = 0.0, rescale: bool = True,
         field: str = 'x') -> Callable[[jax.Array, dict], dict]:
  """fn(rng, batch): batch[field] float [B, ...] with Gaussian noise and / or feature dropout."""
  sigma = augment.number('features', 'sigma', sigma, 0.0, float('inf'), open_hi=True)
  p = augment.number('features', 'p', p, 0.0, 1.0, open_hi=True)
  scale = 1.0 / (1.0 - p) if rescale else 1.0

  def fn(rng: jax.Array, batch: dict) -> dict:
    x = augment.field_of('features', batch, field, floating=True, what=' (float [B, D] features)')
    k_noise, k_drop = jax.random.split(rng)
    if sigma > 0:
      noise = augment.flat(jax.random.normal, k_noise, x.shape, dtype=x.dtype)
      x = x + jnp.asarray(sigma, x.dtype) * noise
    if p > 0:
      keep = augment.flat(jax.random.bernoulli, k_drop, x.shape, p=1.0 - p)
      x = jnp.where(keep, x * jnp.asarray(scale, x.dtype), 0.0).astype(x.dtype)
    return augment.replaced(batch, **{field: x})
  return fn
