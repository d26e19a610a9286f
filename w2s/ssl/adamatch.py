"""AdaMatch: FixMatch with a threshold relative to the labelled confidence and relative alignment.

Berthelot, Roelofs, Sohn, Carlini, Kurakin 2022, "AdaMatch: A Unified Approach to
Semi-Supervised Learning and Domain Adaptation" (ICLR); USB's adamatch:

  p_l = sg(softmax(z(a(x_l)))) [B, C],  q = sg(softmax(z(a(x_u)))) [M, C]
  q~  = Normalize(q * p*_t / p~_t)     (relative distribution alignment, `w2s.ssl.dist_align`,
                                        target='model': p* the EMA of mean_l p_l, p~ of mean_u q)
  c_tau = tau * mean_l max p_l         (relative confidence threshold)
  L = CE(x_l) + lambda_u (1 / M) sum_u 1(max q~ >= c_tau) H(onehot(argmax q~), p(A(x_u)))

The pseudo-label is the argmax of the aligned q~ (as USB; `hard=False` uses q~ itself, also as
USB, which does not sharpen it). Means are over real rows (global under jit).

Defaults (USB): tau 0.95, lambda_u 1, alignment momentum 0.999, hard labels. Deviations from
the paper, all as USB: tau 0.95 where the paper uses 0.9; lambda_u is constant where the paper
ramps it up as 1/2 - cos(min(pi, 2 pi t / T)) / 2; p* and p~ are EMAs (USB) where the paper uses
this batch's means; the labelled term is the weak view's CE only (the paper adds the strong
view's). The paper's random logit interpolation (labelled logits lambda z(x_l, x_u jointly) +
(1 - lambda) z(x_l alone), lambda ~ U(0, 1) per entry) is left out: the step gives one forward of
the labelled batch alone, and it is the identity for models whose normalisation does not mix
rows (GroupNorm, LayerNorm: every model in `w2s.models`); it only matters with BatchNorm.

State: {'p_model': [C], 'p_target': [C]} float32 (`dist_align.init_state`).
"""
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce
from w2s.ssl import dist_align as da
from w2s.ssl import supervised

NEEDS_TEACHER = False


def init_state(*, num_classes: int, num_unlabelled: int | None = None, **hparams) -> dict:
  """{'p_model': [C] 0 (no batch yet), 'p_target': [C] 1/C} (float32)."""
  del num_unlabelled, hparams
  return da.init_state(num_classes)


def relative_threshold(logits_x, mask_x, tau: float = 0.95):
  """c_tau = tau * mean over the real labelled rows of max sg softmax(z(a(x_l))) (scalar)."""
  return tau * supervised.masked_mean(jnp.max(da.probs(logits_x), axis=-1), mask_x)


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None, tau: float = 0.95,
         lambda_u: float = 1.0, momentum: float = da.MOMENTUM, hard: bool = True):
  """CE(x_l) + lambda_u * mean_u[1(max q~ >= tau mean_l max p_l) CE(z(A(x_u)), argmax q~)].

  Args: see `w2s.ssl`; state from `init_state` (required); tau (0.95), lambda_u (1),
    momentum (0.999), hard (True).

  Returns:
    (loss, {'loss_x', 'loss_u', 'mask_rate', 'threshold' (c_tau)}, new state).
  """
  del step, total_steps, index_u, logits_ut
  if state is None:
    raise UserError('adamatch keeps EMA class marginals: pass state=init_state(num_classes=C)')
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  new_state = da.update(state, da.probs(logits_uw), mask_u, probs_x=da.probs(logits_x),
                        mask_x=mask_x, target='model', momentum=momentum)
  q = da.align(da.probs(logits_uw), new_state)
  threshold = relative_threshold(logits_x, mask_x, tau)
  keep = jnp.max(q, axis=-1) >= threshold
  target = _soft_ce.onehot_argmax(q) if hard else q
  per_row = jnp.where(keep, _soft_ce.soft_ce(logits_us, target), 0.0)
  loss_u = supervised.masked_mean(per_row, mask_u)
  aux = {'loss_x': loss_x, 'loss_u': loss_u, 'threshold': threshold,
         'mask_rate': supervised.masked_mean(keep.astype(jnp.float32), mask_u)}
  return loss_x + lambda_u * loss_u, aux, new_state
