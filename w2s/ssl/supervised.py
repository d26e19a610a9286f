"""Supervised baseline: the labelled cross-entropy alone, run through the same SSL step.

The lower bound every semi-supervised table reports (e.g. "Supervised" in Sohn et al. 2020,
FixMatch, and in Wang et al. 2022, USB). Also home of the two reductions every algorithm in
`w2s.ssl` shares: the masked mean over real rows and the labelled CE.
"""
import jax
import jax.numpy as jnp

from w2s.losses import _soft_ce

NEEDS_TEACHER = False


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x [N, ...] over the rows with mask > 0 -> [...]; 0 when none is real.

  Padding rows are removed with `where` (not a multiply), so a non-finite value there
  cannot leak into the mean.
  """
  real = (mask > 0).reshape((-1,) + (1,) * (x.ndim - 1))
  total = jnp.sum(jnp.where(real, x.astype(jnp.float32), 0.0), axis=0)
  return total / jnp.maximum(jnp.sum(mask > 0), 1).astype(jnp.float32)


def labelled_ce(logits_x: jax.Array, labels_x: jax.Array, mask_x: jax.Array) -> jax.Array:
  """Mean soft cross-entropy H(y, softmax(z)) over the real labelled rows (scalar)."""
  labels = _soft_ce.clean_labels(labels_x, mask_x)
  return masked_mean(_soft_ce.soft_ce(logits_x, labels), mask_x)


def loss(*, logits_x, labels_x, mask_x, logits_uw=None, logits_us=None, mask_u=None, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None):
  """Labelled CE only; the unlabelled inputs are ignored.

  Args: see `w2s.ssl` (logits_x [B, C], labels_x [B, C], mask_x [B]; the rest unused).

  Returns:
    (loss_x, {'loss_x', 'loss_u' (= 0)}, None).
  """
  del logits_uw, logits_us, mask_u, step, total_steps, state, index_u, logits_ut
  loss_x = labelled_ce(logits_x, labels_x, mask_x)
  return loss_x, {'loss_x': loss_x, 'loss_u': jnp.zeros((), jnp.float32)}, None
