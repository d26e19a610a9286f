"""Adsh: FixMatch with adaptive per-class thresholds for class-imbalanced SSL.

Guo & Li 2022, "Class-Imbalanced Semi-Supervised Learning with Adaptive Thresholding" (ICML),
Algorithm 1; USB's imb_algorithms/adsh (AdaptiveThresholdingHook) for the details. Confident
rows of a minority class are rarer, so one threshold tau_1 starves the tail; Adsh admits the
same share of every class's predictions as the majority class admits at tau_1:

  C_k   = the confidences max q of the rows of U predicted k, in descending order, n_k = |C_k|
  rho   = |{c in C_1 : c >= tau_1}| / n_1                  (class 1 = the majority class)
  tau_k = C_k[floor(rho n_k)]   (1-indexed; tau_1 where floor(rho n_k) = 0 or n_k = 0)
  L     = CE(x_l) + lambda_u (1 / M) sum_u 1(max q >= tau_{argmax q}) H(q^, p(A(x_u)))

(USB stores s_k = -log tau_k and masks max q >= exp(-s_k): the same rule.) For the majority
class tau_1' is its smallest confidence >= tau_1, so exactly its FixMatch rows pass; tail
classes get lower thresholds in proportion.

Online: USB recomputes the thresholds after each epoch from a pass over all of U. Here the
state keeps every row's latest weak-view confidence and class ([N_u], written when the row is
seen; the SSL step shows each row once per epoch, so the state is at most one epoch old, as
theirs) and the thresholds of a step come from the state before its batch (as FlexMatch's).
Before any row is seen every threshold is tau_1 (FixMatch).

Defaults: tau_1 0.95 (USB's adsh_tau_1), lambda_u 1, hard labels (T 0.5 for soft, as
FixMatch), majority 0: the class with the most labels, class 0 in the long-tailed splits
(`w2s.data.splits`, N_c = N_max gamma^(-c/(C-1)), CIFAR-10-LT's order) and in USB, which takes
class 0 likewise. Deviations: USB's loop sets rho = (count - 1) / n_1 and indexes
C_k[int(n_k rho) - 1] (one row stricter), and rho = 1 (every row passes) when no majority row
reaches tau_1; here the formula above, and tau_1 then. USB starts s_k at tau_1 itself
(thresholds exp(-0.95) = 0.39 until the first epoch ends); here tau_1.

State: {'conf': [N_u] float32 (0 = not seen), 'pred': [N_u] int32 (-1 = not seen)}.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.ssl import fixmatch
from w2s.ssl import supervised

NEEDS_TEACHER = False
UNSEEN = -1


def init_state(*, num_classes: int, num_unlabelled: int, majority: int = 0, **hparams) -> dict:
  """{'conf': [N] zeros float32, 'pred': [N] int32 filled with -1}."""
  del hparams
  _check_majority(majority, num_classes)
  return {'conf': jnp.zeros((num_unlabelled,), jnp.float32),
          'pred': jnp.full((num_unlabelled,), UNSEEN, jnp.int32)}


def _check_majority(majority, num_classes: int) -> None:
  if isinstance(majority, bool) or not isinstance(majority, int) or not (
      0 <= majority < num_classes):
    raise UserError(f'adsh majority={majority!r} must be a class in [0, {num_classes}): the class '
                    'with the most labels (0 in the long-tailed splits)')


def class_thresholds(conf: jax.Array, pred: jax.Array, num_classes: int, *, tau: float = 0.95,
                     majority: int = 0) -> tuple[jax.Array, jax.Array]:
  """(tau_k [C] float32, rho scalar) from the rows' confidences conf [N] and classes pred [N]
  (-1 = not seen, left out)."""
  conf = jnp.asarray(conf, jnp.float32)
  pred = jnp.asarray(pred, jnp.int32)
  cls = jnp.where(pred >= 0, pred, num_classes)  # unseen rows sort last, counted nowhere
  n_k = jnp.zeros((num_classes,), jnp.int32).at[cls].add(1, mode='drop')
  passed = jnp.sum((pred == majority) & (conf >= tau))
  n_maj = n_k[majority]
  rho = jnp.where(n_maj > 0, passed.astype(jnp.float32) / jnp.maximum(n_maj, 1), 0.0)
  # floor(passed n_k / n_maj): exact in float32 while passed * n_k < 2^24; above, the 1e-6
  # guards a quotient that is an integer against rounding just below it
  m_k = jnp.floor(passed.astype(jnp.float32) * n_k.astype(jnp.float32)
                  / jnp.maximum(n_maj, 1).astype(jnp.float32) * (1 + 1e-6)).astype(jnp.int32)
  m_k = jnp.where(n_maj > 0, jnp.minimum(m_k, n_k), 0)
  order = jnp.lexsort((-conf, cls))  # by class, then by descending confidence
  start = jnp.cumsum(n_k) - n_k  # first position of each class in `order`
  at = jnp.clip(start + m_k - 1, 0, conf.shape[0] - 1)
  tau_k = jnp.where(m_k >= 1, conf[order[at]], jnp.float32(tau))
  return tau_k, rho


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None, tau: float = 0.95,
         lambda_u: float = 1.0, hard: bool = True, T: float = 0.5, majority: int = 0):
  """CE(x_l) + lambda_u * mean_u[1(max q >= tau_{argmax q}) CE(z(A(x_u)), q^)], and the new state.

  Args: see `w2s.ssl`; state {'conf': [N], 'pred': [N]} and index_u [M] are required; tau
    (tau_1, 0.95), lambda_u (1), hard (True), T (0.5), majority (0).

  Returns:
    (loss, {'loss_x', 'loss_u', 'mask_rate', 'threshold_min', 'rho', 'seen_frac'},
     {'conf', 'pred'} with this batch's real rows written at index_u).
  """
  del step, total_steps, logits_ut
  if state is None or index_u is None:
    raise UserError('adsh keeps a per-example state: pass state=init_state(...) and index_u '
                    '(rows of the unlabelled split)')
  num_classes = logits_uw.shape[-1]
  _check_majority(majority, num_classes)
  conf_all, pred_all = state['conf'], state['pred']
  thresholds, rho = class_thresholds(conf_all, pred_all, num_classes, tau=tau, majority=majority)
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  conf, pred = fixmatch.confidence(logits_uw)
  keep = conf >= thresholds[pred]
  loss_u = fixmatch.masked_ce(logits_us, logits_uw, keep, mask_u, hard=hard, T=T)
  n = conf_all.shape[0]
  rows = jnp.where(mask_u > 0, jnp.asarray(index_u, jnp.int32), n)  # padding: dropped
  new = {'conf': jnp.asarray(conf_all, jnp.float32).at[rows].set(conf, mode='drop'),
         'pred': jnp.asarray(pred_all, jnp.int32).at[rows].set(pred, mode='drop')}
  aux = {'loss_x': loss_x, 'loss_u': loss_u,
         'mask_rate': supervised.masked_mean(keep.astype(jnp.float32), mask_u),
         'threshold_min': jnp.min(thresholds), 'rho': rho,
         'seen_frac': jnp.mean((new['pred'] >= 0).astype(jnp.float32))}
  return loss_x + lambda_u * loss_u, aux, new
