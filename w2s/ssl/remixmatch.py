"""ReMixMatch: distribution alignment and augmentation anchoring on top of MixMatch.

Berthelot, Carlini, Cubuk, Kurakin, Sohn, Zhang, Raffel 2020, "ReMixMatch: Semi-Supervised
Learning with Distribution Alignment and Augmentation Anchoring" (ICLR), Algorithm 1; USB's
remixmatch for the details:

  q~_u  = Normalize(q_u p(y) / p~(y)),  q_u = sg softmax(z(a(x_u)))   (`w2s.ssl.dist_align`)
  q_u   = Sharpen(q~_u, T)                                              (anchor: the weak view)
  U^    = ((A_k(x_u), q_u))_{k=1..K} + ((a(x_u), q_u))                  (K strong views + weak)
  X', U' = MixUp of X^ = (a(x_l), y_l) and U^ with a shuffled copy of their union (as MixMatch)
  L     = (1 / B) sum_{X'} H(p, p_model(x)) + w(t) [ lambda_u (1 / (K + 1) M) sum_{U'} H(q, p_model(u))
          + lambda_u1 (1 / M) sum_u H(q_u, p_model(A_1(x_u))) ]

with w(t) = clip(t / (warmup T_total), 0, 1) on both unlabelled terms (USB). The U1 term is the
pre-mixup cross-entropy of the first strong view against its anchor. Defaults: K 2 (USB; the
paper uses 8), T 0.5, alpha 0.75, lambda_u 1.5, lambda_u1 0.5, warmup 1/64, alignment EMA 0.999.

p(y) is the labelled class marginal. `dist_uniform=True` (default) takes it uniform, which it is
on this codebase's class-balanced label draws (`labels.per_class`); `dist_uniform=False` uses the
EMA of the labelled batches' label means (dist_align target 'model' fed the labels) for
imbalanced labels (USB's 'gt' target, counted once from the labelled set).

Deviation (documented): the self-supervised rotation loss (lambda_r 0.5: predict which of 4
rotations of A_1(x_u) was applied) needs a rotation head on the model's features, which the models
here do not have; it is left out. USB drops it likewise for text and audio (rot_loss_ratio 0).
Also as `w2s.ssl.mixmatch`: one lambda' per step, no interleaving, logits_x an extra sg eval
pass (accuracy metric only); float inputs only.

State: {'p_model': [C], 'p_target': [C]} float32 (dist_align).
"""
import jax

from w2s.errors import UserError
from w2s.losses import _soft_ce
from w2s.ssl import dist_align as da
from w2s.ssl import mixmatch
from w2s.ssl import mixup
from w2s.ssl import supervised

NEEDS_TEACHER = False
INPUT_LEVEL = True  # the step calls loss(apply=, x=, u_view=, rng=, ...) (see w2s.ssl)


def init_state(*, num_classes: int, num_unlabelled: int | None = None, **hparams) -> dict:
  """{'p_model': [C] 0 (no batch yet), 'p_target': [C] 1/C} (float32)."""
  del num_unlabelled, hparams
  return da.init_state(num_classes)


def anchor(logits_uw, labels_x, mask_x, mask_u, state: dict, *, T: float, momentum: float,
           dist_uniform: bool) -> tuple[jax.Array, dict]:
  """(q = Sharpen(DA(sg softmax(logits_uw)), T) [M, C], updated alignment state)."""
  q = da.probs(logits_uw)
  state = da.update(state, q, mask_u, probs_x=_soft_ce.clean_labels(labels_x, mask_x),
                    mask_x=mask_x, target='uniform' if dist_uniform else 'model',
                    momentum=momentum)
  return mixup.sharpen(da.align(q, state), T), state


def loss(*, apply, x, labels_x, mask_x, u_view, mask_u, rng, step, total_steps, state=None,
         index_u=None, K: int = 2, T: float = 0.5, alpha: float = 0.75, lambda_u: float = 1.5,
         lambda_u1: float = 0.5, warmup: float = 1 / 64, momentum: float = da.MOMENTUM,
         dist_uniform: bool = True):
  """CE(X') + w(t) (lambda_u CE(U') + lambda_u1 CE(A_1(x_u), q)) (Berthelot et al. 2020).

  Args: see `w2s.ssl` (input level); state from `init_state` (required); K (2) strong views,
    T (0.5), alpha (0.75), lambda_u (1.5), lambda_u1 (0.5), warmup (1/64 of total_steps),
    momentum (0.999, alignment EMA), dist_uniform (True).

  Returns:
    (loss, {'loss_x', 'loss_u' (mixed), 'loss_u1' (pre-mixup strong view), 'weight' (w(t)),
     'mix_lambda'}, new state, logits_x [B, C] (sg, unmixed), logits_uw [M, C] (sg, weak)).
  """
  del index_u
  if state is None:
    raise UserError('remixmatch keeps distribution-alignment EMAs: pass '
                    'state=init_state(num_classes=C)')
  if K < 1:
    raise UserError(f'remixmatch K={K}: use at least 1 strong view')
  x = mixup.float_inputs(x, 'remixmatch')
  weak = mixup.float_inputs(u_view('weak', 0), 'remixmatch')
  strong = [mixup.float_inputs(u_view('strong', k), 'remixmatch') for k in range(K)]
  k_w, k_s, k_mix = jax.random.split(rng, 3)
  logits_uw = jax.lax.stop_gradient(apply(weak, k_w))
  q, new_state = anchor(logits_uw, labels_x, mask_x, mask_u, state, T=T, momentum=momentum,
                        dist_uniform=dist_uniform)
  loss_u1 = supervised.masked_mean(_soft_ce.soft_ce(apply(strong[0], k_s), q), mask_u)
  loss_x, loss_u, lam = mixmatch.mixed_losses(apply, x, labels_x, mask_x, strong + [weak], q,
                                              mask_u, k_mix, alpha, 'remixmatch', 'ce')
  w = mixup.ramp(step, total_steps, warmup)
  logits_x = jax.lax.stop_gradient(apply(x, None))
  aux = {'loss_x': loss_x, 'loss_u': loss_u, 'loss_u1': loss_u1, 'weight': w, 'mix_lambda': lam}
  total = loss_x + w * (lambda_u * loss_u + lambda_u1 * loss_u1)
  return total, aux, new_state, logits_x, logits_uw
