"""FixMatch: confident pseudo-labels from the weak view train the strong view.

Sohn, Berthelot, Li, Zhang, Carlini, Cubuk, Kurakin, Zhang, Raffel 2020, "FixMatch: Simplifying
Semi-Supervised Learning with Consistency and Confidence" (NeurIPS):

  q = sg(softmax(z(a(x_u)))),  q^ = onehot(argmax q)
  L = CE(x_l) + lambda_u * (1 / mu B) sum_u 1(max q >= tau) H(q^, softmax(z(A(x_u))))

Paper defaults: tau 0.95, lambda_u 1 (mu 7, SGD-Nesterov 0.03 cosine and the EMA for evaluation
belong to the step and config). The unlabelled mean is over all real unlabelled rows, masked ones
counting 0, as in the paper. `hard=False` uses the soft target softmax(z(a(x_u)) / T) instead of
q^ (the USB option; USB's default T is 0.5); the mask is still on the unsharpened max q.
"""
import jax
import jax.numpy as jnp

from w2s.losses import _soft_ce
from w2s.ssl import supervised

NEEDS_TEACHER = False


def confidence(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(max q [M], argmax q [M] int32) of q = sg(softmax(logits [M, C]))."""
  q = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
  return jnp.max(q, axis=-1), jnp.argmax(q, axis=-1).astype(jnp.int32)


def pseudo_targets(logits: jax.Array, *, hard: bool = True, T: float = 0.5) -> jax.Array:
  """sg targets [M, C]: onehot(argmax) if hard, else softmax(logits / T)."""
  z = jax.lax.stop_gradient(logits).astype(jnp.float32)
  if hard:
    return _soft_ce.onehot_argmax(z)
  return jax.nn.softmax(z / T, axis=-1)


def masked_ce(logits_us, logits_uw, keep, mask_u, *, hard: bool = True, T: float = 0.5):
  """(1 / M_real) sum_u keep_u H(target(a(x_u)), softmax(z(A(x_u)))): the FixMatch term.

  Args:
    logits_us: [M, C] student logits on the strong view (trained).
    logits_uw: [M, C] logits on the weak view (targets, stop-gradient).
    keep: [M] bool, rows that pass the threshold.
    mask_u: [M] 1 real, 0 padding.
  """
  target = pseudo_targets(logits_uw, hard=hard, T=T)
  per_row = jnp.where(keep, _soft_ce.soft_ce(logits_us, target), 0.0)
  return supervised.masked_mean(per_row, mask_u)


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None, tau: float = 0.95,
         lambda_u: float = 1.0, hard: bool = True, T: float = 0.5):
  """CE(x_l) + lambda_u * mean_u[1(max q >= tau) CE(z(A(x_u)), q^)] (Sohn et al. 2020).

  Args: see `w2s.ssl`; tau (0.95), lambda_u (1), hard (True) and T (0.5, soft targets only).

  Returns:
    (loss, {'loss_x', 'loss_u', 'mask_rate'}, None).
  """
  del step, total_steps, state, index_u, logits_ut
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  conf, _ = confidence(logits_uw)
  keep = conf >= tau
  loss_u = masked_ce(logits_us, logits_uw, keep, mask_u, hard=hard, T=T)
  aux = {'loss_x': loss_x, 'loss_u': loss_u,
         'mask_rate': supervised.masked_mean(keep.astype(jnp.float32), mask_u)}
  return loss_x + lambda_u * loss_u, aux, None
