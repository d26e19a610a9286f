"""Masked batch statistics shared by the losses (priors, quantiles, medians).

Every statistic ignores rows with mask == 0 (padding). Under `jax.jit` on a
global `jax.Array` sharded over a ('data',) mesh these are reductions and sorts
over the whole global batch, so a loss that uses them sees the same numbers
however the batch is split over devices (tested in tests/test_losses_sharding.py).
"""
import jax
import jax.numpy as jnp


def real(mask: jax.Array) -> jax.Array:
  """[B] float32 indicator of real (non-padding) rows: 1.0 where mask > 0."""
  return (mask > 0).astype(jnp.float32)


def count(mask: jax.Array) -> jax.Array:
  """Number of real rows (a float32 scalar, 0 for an all-padding batch)."""
  return jnp.sum(real(mask))


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over the real rows of x [B, ...] -> [...]; 0 when no row is real."""
  m = real(mask).reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.sum(x * m, axis=0) / jnp.maximum(count(mask), 1.0)


def masked_quantile(x: jax.Array, mask: jax.Array, q) -> jax.Array:
  """The q-quantile of x [B] over the real rows, linear interpolation.

  Matches `numpy.quantile(x[mask > 0], q)` / `torch.quantile` (method 'linear',
  the one the original weak-to-strong release uses): with n real values sorted
  ascending, position q (n - 1) is interpolated between its neighbours.

  Args:
    x: [B] values.
    mask: [B] 1 for real rows, 0 for padding (padding never counts).
    q: scalar level in [0, 1] (clipped); may be traced.

  Returns:
    float32 scalar; 0 when no row is real.
  """
  x = x.astype(jnp.float32)
  is_real = mask > 0
  n = jnp.sum(is_real.astype(jnp.int32))
  # Padding sorts to the end, so the first n entries are the real values (a
  # finite fill keeps the all-padding case free of inf - inf).
  xs = jnp.sort(jnp.where(is_real, x, jnp.finfo(jnp.float32).max))
  pos = jnp.clip(q, 0.0, 1.0) * jnp.maximum(n - 1, 0).astype(jnp.float32)
  lo = jnp.floor(pos).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  frac = pos - lo.astype(jnp.float32)
  x_lo, x_hi = xs[lo], xs[hi]
  value = x_lo + frac * (x_hi - x_lo)
  return jnp.where(n > 0, value, 0.0)


def masked_median(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Median of x [B] over the real rows (the 0.5 masked quantile)."""
  return masked_quantile(x, mask, 0.5)


def weak_prior(labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Class prior of the (weak) soft labels [B, C] over the real rows -> [C]."""
  return masked_mean(labels.astype(jnp.float32), mask)
