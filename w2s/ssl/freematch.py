"""FreeMatch: self-adaptive global and per-class thresholds plus a fairness term.

Wang, Chen, Heng, Hou, Fan, Wu, Wang, Savvides, Shinozaki, Raj, Schiele, Xie 2023, "FreeMatch:
Self-adaptive Thresholding for Semi-supervised Learning" (ICLR); and USB's freematch:

  tau_t  = m tau_{t-1} + (1 - m) mean_u max q          (self-adaptive global threshold)
  p~_t   = m p~_{t-1} + (1 - m) mean_u q               (local class probabilities)
  h~_t   = m h~_{t-1} + (1 - m) hist_u(argmax q)       (histogram of predicted classes)
  mask_u = 1(max q >= MaxNorm(p~_t)[argmax q] * tau_t),  MaxNorm(p) = p / max_c p
  L_f    = -H(SumNorm(p~_t / h~_t), SumNorm(p_bar / h_bar)) = sum_c a_c log b_c
  L = CE(x_l) + lambda_u (1 / M) sum_u mask_u H(q^, p(A(x_u))) + lambda_f L_f

with q = sg(softmax(z(a(x_u)))), m = 0.999, everything initialised to 1/C (as the paper).
The state is updated with this batch first and then used for the mask and L_f (as USB). p_bar
and h_bar are the mean strong-view probability and the histogram of its argmax over the masked
real rows (h_bar under sg; 1/h_bar is 0 where h_bar = 0); L_f = 0 when no row is masked in.
Batch means are over the real unlabelled rows (global under jit); an all-padding batch leaves
the state unchanged.

Defaults: lambda_u 1, lambda_f 0.01 (USB's argument default; its CIFAR-10 40-label config
uses 0.001), hard labels (T 0.5 for soft). Deviation: USB's code initialises p~, h~ to ones
and tau to 1; the paper's 1/C is used here.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.ssl import fixmatch
from w2s.ssl import supervised

NEEDS_TEACHER = False
MOMENTUM = 0.999


def init_state(*, num_classes: int, num_unlabelled: int | None = None, **hparams) -> dict:
  """{'tau': 1/C, 'p_model': [C] 1/C, 'label_hist': [C] 1/C} (float32)."""
  del num_unlabelled, hparams
  u = jnp.full((num_classes,), 1.0 / num_classes, jnp.float32)
  return {'tau': jnp.asarray(1.0 / num_classes, jnp.float32), 'p_model': u, 'label_hist': u}


def update_state(state: dict, logits_uw: jax.Array, mask_u: jax.Array,
                 momentum: float = MOMENTUM) -> dict:
  """The EMAs tau_t, p~_t, h~_t after one batch (sg weak-view probabilities [M, C])."""
  q = jax.nn.softmax(jax.lax.stop_gradient(logits_uw).astype(jnp.float32), axis=-1)
  hist = jax.nn.one_hot(jnp.argmax(q, axis=-1), q.shape[-1], dtype=jnp.float32)
  batch = {'tau': supervised.masked_mean(jnp.max(q, axis=-1), mask_u),
           'p_model': supervised.masked_mean(q, mask_u),
           'label_hist': supervised.masked_mean(hist, mask_u)}
  any_real = jnp.any(mask_u > 0)
  return {k: jnp.where(any_real, momentum * jnp.asarray(state[k], jnp.float32)
                       + (1.0 - momentum) * batch[k], state[k]) for k in batch}


def fairness_loss(logits_us: jax.Array, keep: jax.Array, state: dict) -> jax.Array:
  """L_f = sum_c SumNorm(p~ / h~)_c log(SumNorm(p_bar / h_bar)_c + 1e-12) over the kept rows."""
  p_s = jax.nn.softmax(logits_us.astype(jnp.float32), axis=-1)
  n = jnp.sum(keep).astype(jnp.float32)
  sel = keep[:, None]
  p_bar = jnp.sum(jnp.where(sel, p_s, 0.0), axis=0) / jnp.maximum(n, 1.0)
  onehot = jax.nn.one_hot(jnp.argmax(p_s, axis=-1), p_s.shape[-1], dtype=jnp.float32)
  h_bar = jax.lax.stop_gradient(jnp.sum(jnp.where(sel, onehot, 0.0), axis=0) / jnp.maximum(n, 1.0))
  b = p_bar * jnp.where(h_bar > 0, 1.0 / jnp.where(h_bar > 0, h_bar, 1.0), 0.0)
  b = b / jnp.where(jnp.sum(b) > 0, jnp.sum(b), 1.0)
  a = state['p_model'] / state['label_hist']
  a = jax.lax.stop_gradient(a / jnp.sum(a))
  return jnp.where(n > 0, jnp.sum(a * jnp.log(b + 1e-12)), 0.0)


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None, lambda_u: float = 1.0,
         lambda_f: float = 0.01, momentum: float = MOMENTUM, hard: bool = True, T: float = 0.5):
  """CE(x_l) + lambda_u L_u(self-adaptive mask) + lambda_f L_f, and the updated EMAs.

  Args: see `w2s.ssl`; state from `init_state` (required); lambda_u (1), lambda_f (0.01),
    momentum (0.999), hard (True), T (0.5).

  Returns:
    (loss, {'loss_x', 'loss_u', 'loss_f', 'mask_rate', 'tau'}, new state).
  """
  del step, total_steps, index_u, logits_ut
  if state is None:
    raise UserError('freematch keeps EMA thresholds: pass state=init_state(num_classes=C, ...)')
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  new_state = update_state(state, logits_uw, mask_u, momentum)
  conf, pred = fixmatch.confidence(logits_uw)
  p_model = new_state['p_model']
  keep = conf >= (p_model / jnp.max(p_model))[pred] * new_state['tau']
  loss_u = fixmatch.masked_ce(logits_us, logits_uw, keep, mask_u, hard=hard, T=T)
  loss_f = fairness_loss(logits_us, keep & (mask_u > 0), new_state)
  aux = {'loss_x': loss_x, 'loss_u': loss_u, 'loss_f': loss_f, 'tau': new_state['tau'],
         'mask_rate': supervised.masked_mean(keep.astype(jnp.float32), mask_u)}
  return loss_x + lambda_u * loss_u + lambda_f * loss_f, aux, new_state
