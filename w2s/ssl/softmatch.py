"""SoftMatch: a truncated-Gaussian weight on every pseudo-label instead of a hard threshold.

Chen, Tao, Wang, Wang, Heng, Fan, Wu, Raj, Savvides, Shinozaki, Schiele, Xie 2023, "SoftMatch:
Addressing the Quantity-Quality Trade-off in Semi-supervised Learning" (ICLR); USB's softmatch:

  q~     = UA(q) = Normalize(q * u / p~_t)          (uniform alignment, `w2s.ssl.dist_align`)
  mu_t   = m mu_{t-1} + (1 - m) mean_u max q~        (EMA of the confidence's mean ...)
  s2_t   = m s2_{t-1} + (1 - m) var_u max q~         (... and of its unbiased variance)
  lambda(q~) = lambda_max                                            if max q~ >= mu_t
             = lambda_max exp(-(max q~ - mu_t)^2 / (2 s2_t / n^2))   otherwise   (n_sigma = 2)
  L = CE(x_l) + (1 / M) sum_u lambda(q~_u) H(q^_u, p(A(x_u)))

with q = sg(softmax(z(a(x_u)))), q^ = onehot(argmax q): the pseudo-label comes from q itself, the
alignment only sets the weight (as USB). lambda_max is `lambda_u` (the weight is in [0, 1]).
The EMAs are updated with this batch first and then give the weights (as USB's
SoftMatchWeightingHook). Batch statistics are over the real unlabelled rows; s2 keeps its value
when fewer than 2 rows are real (the unbiased variance of one row is undefined; USB's is NaN).

Defaults (USB, = the paper): lambda_u 1, n_sigma 2, m 0.999, uniform alignment, mu_0 = 1/C,
s2_0 = 1, hard labels (T 0.5 for soft). `dist_align=False` drops the alignment;
`dist_uniform=False` aligns to the labelled weak view's EMA prediction instead of uniform (USB's
options). USB's per-class Gaussians (`per_class`) are not implemented.

State: {'p_model': [C], 'p_target': [C], 'mu': [], 'var': []} float32.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce
from w2s.ssl import dist_align as da
from w2s.ssl import fixmatch
from w2s.ssl import supervised

NEEDS_TEACHER = False
MOMENTUM = 0.999


def init_state(*, num_classes: int, num_unlabelled: int | None = None, **hparams) -> dict:
  """{'p_model': [C] 0 (no batch yet), 'p_target': [C] 1/C, 'mu': 1/C, 'var': 1} (float32)."""
  del num_unlabelled, hparams
  return {**da.init_state(num_classes),
          'mu': jnp.asarray(1.0 / num_classes, jnp.float32),
          'var': jnp.asarray(1.0, jnp.float32)}


def update_gaussian(state: dict, conf: jax.Array, mask_u: jax.Array,
                    momentum: float = MOMENTUM) -> dict:
  """mu_t, s2_t after one batch of confidences conf [M] (max of the aligned q)."""
  real = mask_u > 0
  n = jnp.sum(real).astype(jnp.float32)
  mean = supervised.masked_mean(conf, mask_u)
  var = jnp.sum(jnp.where(real, (conf - mean) ** 2, 0.0)) / jnp.maximum(n - 1.0, 1.0)
  mu_old = jnp.asarray(state['mu'], jnp.float32)
  var_old = jnp.asarray(state['var'], jnp.float32)
  return {**state,
          'mu': jnp.where(n > 0, momentum * mu_old + (1.0 - momentum) * mean, mu_old),
          'var': jnp.where(n > 1, momentum * var_old + (1.0 - momentum) * var, var_old)}


def weights(conf: jax.Array, mu: jax.Array, var: jax.Array, n_sigma: float = 2.0) -> jax.Array:
  """lambda / lambda_max = exp(-min(conf - mu, 0)^2 / (2 var / n_sigma^2)) -> [M] in [0, 1]."""
  d = jnp.minimum(conf - mu, 0.0)
  # where, not a plain exp: d = 0 and var = 0 would be 0 / 0
  return jnp.where(d < 0, jnp.exp(-(d ** 2) / (2.0 * var / n_sigma ** 2)), 1.0)


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None, lambda_u: float = 1.0,
         n_sigma: float = 2.0, momentum: float = MOMENTUM, dist_align: bool = True,
         dist_uniform: bool = True, hard: bool = True, T: float = 0.5):
  """CE(x_l) + lambda_u * mean_u[lambda(q~_u) CE(z(A(x_u)), q^_u)], and the updated EMAs.

  Args: see `w2s.ssl`; state from `init_state` (required); lambda_u (1), n_sigma (2),
    momentum (0.999), dist_align (True), dist_uniform (True), hard (True), T (0.5, soft only).

  Returns:
    (loss, {'loss_x', 'loss_u', 'mask_rate' (share of real rows with max q~ >= mu_t: full
     weight), 'weight_mean' (mean lambda / lambda_max, USB's util_ratio), 'mu', 'var'},
     new state).
  """
  del step, total_steps, index_u, logits_ut
  if state is None:
    raise UserError('softmatch keeps EMA statistics: pass state=init_state(num_classes=C)')
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  q = da.probs(logits_uw)
  new_state = dict(state)
  if dist_align:
    new_state = da.update(new_state, q, mask_u, probs_x=da.probs(logits_x), mask_x=mask_x,
                          target='uniform' if dist_uniform else 'model', momentum=momentum)
    q = da.align(q, new_state)
  conf = jnp.max(q, axis=-1)
  new_state = update_gaussian(new_state, conf, mask_u, momentum)
  w = weights(conf, new_state['mu'], new_state['var'], n_sigma)
  target = fixmatch.pseudo_targets(logits_uw, hard=hard, T=T)
  loss_u = supervised.masked_mean(w * _soft_ce.soft_ce(logits_us, target), mask_u)
  aux = {'loss_x': loss_x, 'loss_u': loss_u,
         'mask_rate': supervised.masked_mean((conf >= new_state['mu']).astype(jnp.float32),
                                             mask_u),
         'weight_mean': supervised.masked_mean(w, mask_u),
         'mu': new_state['mu'], 'var': new_state['var']}
  return loss_x + lambda_u * loss_u, aux, new_state
