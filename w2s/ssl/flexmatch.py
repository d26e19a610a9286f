"""FlexMatch: FixMatch with per-class thresholds from curriculum pseudo-labelling (CPL).

Zhang, Wang, Hou, Wu, Wang, Okumura, Shinozaki 2021, "FlexMatch: Boosting Semi-Supervised
Learning with Curriculum Pseudo Labeling" (NeurIPS):

  sigma_t(c) = #{n in U : selected_label[n] = c}       (rows once predicted c with max q >= tau)
  beta_t(c)  = sigma_t(c) / max(max_c sigma_t, N - sum_c sigma_t)     (threshold warm-up)
  T_t(c)     = M(beta_t(c)) * tau,   M(x) = x / (2 - x)                (the convex mapping)
  L = CE(x_l) + lambda_u (1 / M) sum_u 1(max q >= T_t(argmax q)) H(q^, p(A(x_u)))

State: `selected_label` [N] int32, -1 = never selected (the paper's "unused"). The thresholds of
a step come from the state before this batch (as in USB's FlexMatchThresholdingHook); then every
real row with max q >= tau writes argmax q at its index_u, the new state returned. Without
warm-up (thresh_warmup=False) the denominator is max_c sigma_t(c) alone.
Defaults: tau 0.95, lambda_u 1, hard labels (T 0.5 for soft, USB). Deviation: USB keeps the
previous beta when every row of U is in one class; the formula here gives 1 for that class.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.ssl import fixmatch
from w2s.ssl import supervised

NEEDS_TEACHER = False
UNUSED = -1


def init_state(*, num_classes: int, num_unlabelled: int, **hparams) -> dict:
  """{'selected_label': [N] int32 filled with -1}."""
  del num_classes, hparams
  return {'selected_label': jnp.full((num_unlabelled,), UNUSED, jnp.int32)}


def learning_effect(selected_label: jax.Array, num_classes: int,
                    thresh_warmup: bool = True) -> jax.Array:
  """beta_t [C] from selected_label [N] (with or without the threshold warm-up)."""
  n = selected_label.shape[0]
  idx = jnp.where(selected_label >= 0, selected_label, num_classes)  # -1 dropped, not wrapped
  sigma = jnp.zeros((num_classes,), jnp.int32).at[idx].add(1, mode='drop')
  denom = jnp.max(sigma)
  if thresh_warmup:
    denom = jnp.maximum(denom, n - jnp.sum(sigma))
  return sigma.astype(jnp.float32) / jnp.maximum(denom, 1).astype(jnp.float32)


def class_thresholds(selected_label, num_classes: int, *, tau: float = 0.95,
                     thresh_warmup: bool = True) -> jax.Array:
  """T_t(c) = tau * beta / (2 - beta), [C]."""
  beta = learning_effect(selected_label, num_classes, thresh_warmup)
  return tau * beta / (2.0 - beta)


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None, tau: float = 0.95,
         lambda_u: float = 1.0, hard: bool = True, T: float = 0.5, thresh_warmup: bool = True):
  """CE(x_l) + lambda_u * mean_u[1(max q >= T_t(argmax q)) CE(z(A(x_u)), q^)], and the new state.

  Args: see `w2s.ssl`; state {'selected_label': [N]} and index_u [M] are required;
    tau (0.95), lambda_u (1), hard (True), T (0.5), thresh_warmup (True).

  Returns:
    (loss, {'loss_x', 'loss_u', 'mask_rate', 'threshold_mean', 'used_frac'},
     {'selected_label': [N] updated at this batch's confident real rows}).
  """
  del step, total_steps, logits_ut
  if state is None or index_u is None:
    raise UserError('flexmatch keeps a per-example state: pass state=init_state(...) and '
                    'index_u (rows of the unlabelled split)')
  selected = jnp.asarray(state['selected_label'], jnp.int32)
  num_classes = logits_uw.shape[-1]
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  conf, pred = fixmatch.confidence(logits_uw)
  thresholds = class_thresholds(selected, num_classes, tau=tau, thresh_warmup=thresh_warmup)
  keep = conf >= thresholds[pred]
  loss_u = fixmatch.masked_ce(logits_us, logits_uw, keep, mask_u, hard=hard, T=T)

  write = (conf >= tau) & (mask_u > 0)
  rows = jnp.where(write, jnp.asarray(index_u, jnp.int32), selected.shape[0])  # N: dropped
  new_selected = selected.at[rows].set(pred, mode='drop')
  aux = {'loss_x': loss_x, 'loss_u': loss_u,
         'mask_rate': supervised.masked_mean(keep.astype(jnp.float32), mask_u),
         'threshold_mean': jnp.mean(thresholds),
         'used_frac': jnp.mean((new_selected >= 0).astype(jnp.float32))}
  return loss_x + lambda_u * loss_u, aux, {'selected_label': new_selected}
