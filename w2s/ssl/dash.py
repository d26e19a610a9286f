"""Dash: keep the unlabelled rows whose pseudo-label loss is under a threshold that decays.

Xu, Shang, Ye, Qian, Li, Sun, Li, Jin 2021, "Dash: Semi-Supervised Learning with Dynamic
Thresholding" (ICML); USB's dash (DashThresholdingHook):

  warm-up:  t < T0 steps: L = CE(x_l) only; then rho_hat from the warmed-up model
  rho_t  = max(C gamma^{-(k_t - 1)} rho_hat, rho_min),  k_t = 1 + floor((t - T0) / E)
  y~_u   = softmax(z(a(x_u)) / T) while rho_t > rho_min, onehot(argmax) once rho_t = rho_min
  l_u    = H(y~_u, p(a(x_u)))                          (the loss of the weak view, sg)
  L = CE(x_l) + lambda_u (1 / M) sum_u 1(l_u <= rho_t) H(y~_u, p(A(x_u)))

so the threshold starts at C rho_hat and is divided by gamma every E steps: early on rows with a
moderate loss are kept, later only those the model already fits well.

Defaults (USB's CIFAR configs): C 1.0001, gamma 1.27, rho_min 0.05, T 0.5, lambda_u 1. USB
counts steps absolutely (2,048 warm-up steps, rho updated every 10 epochs of 1,024 steps, out of
2^20); here both are fractions of total_steps with the same ratios: warmup 2048 / 2^20 and
rho_every 10240 / 2^20, so a short run keeps USB's shape.

Deviation: rho_hat is the mean labelled CE of the first batch at t >= T0 (the warmed-up model's
loss on labelled data, estimated on one batch); USB uses the loss on the evaluation split, which
a train step does not see (and which would look at held-out data). On a few labels the
warmed-up model may fit L closely, so rho_hat (and rho_t) can come out lower than USB's. During warm-up
the unlabelled term is 0, with the same forward passes as later (USB skips U there).

State: {'rho_hat': [] float32}, -1 until the warm-up ends.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce
from w2s.ssl import fixmatch
from w2s.ssl import supervised

NEEDS_TEACHER = False
UNSET = -1.0
WARMUP = 2048 / 2 ** 20
RHO_EVERY = 10240 / 2 ** 20


def init_state(*, num_classes: int | None = None, num_unlabelled: int | None = None,
               **hparams) -> dict:
  """{'rho_hat': -1.0} (float32): not measured yet."""
  del num_classes, num_unlabelled, hparams
  return {'rho_hat': jnp.asarray(UNSET, jnp.float32)}


def schedule(total_steps: int, warmup: float = WARMUP, rho_every: float = RHO_EVERY):
  """(T0, E) in steps from the fractions of total_steps (python ints, E >= 1)."""
  if not (0.0 <= warmup < 1.0 and 0.0 < rho_every <= 1.0):
    raise UserError(f'dash warmup={warmup} and rho_every={rho_every} are fractions of '
                    'total_steps: use 0 <= warmup < 1 and 0 < rho_every <= 1')
  return int(warmup * total_steps), max(1, int(rho_every * total_steps))


def threshold(step, rho_hat, *, warmup_steps: int, every: int, C: float = 1.0001,
              gamma: float = 1.27, rho_min: float = 0.05) -> jax.Array:
  """rho_t = max(C gamma^{-floor((t - T0) / E)} rho_hat, rho_min) (scalar, for t >= T0)."""
  k = jnp.maximum(jnp.asarray(step, jnp.int32) - warmup_steps, 0) // every
  rho = C * jnp.power(jnp.float32(gamma), -k.astype(jnp.float32)) * rho_hat
  return jnp.maximum(rho, rho_min)


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step, total_steps,
         state=None, index_u=None, logits_ut=None, lambda_u: float = 1.0, C: float = 1.0001,
         gamma: float = 1.27, rho_min: float = 0.05, T: float = 0.5, warmup: float = WARMUP,
         rho_every: float = RHO_EVERY):
  """CE(x_l) + lambda_u * mean_u[1(l_u <= rho_t) CE(z(A(x_u)), y~_u)] after the warm-up.

  Args: see `w2s.ssl`; state from `init_state` (required); lambda_u (1), C (1.0001),
    gamma (1.27), rho_min (0.05), T (0.5), warmup and rho_every (fractions of total_steps).

  Returns:
    (loss, {'loss_x', 'loss_u', 'mask_rate', 'rho' (0 during warm-up), 'hard' (1 once
     rho_t = rho_min)}, {'rho_hat'}).
  """
  del index_u, logits_ut
  if state is None:
    raise UserError('dash keeps its base threshold: pass state=init_state()')
  warmup_steps, every = schedule(total_steps, warmup, rho_every)
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  after = jnp.asarray(step, jnp.int32) >= warmup_steps
  old = jnp.asarray(state['rho_hat'], jnp.float32)
  measure = after & (old < 0) & jnp.any(mask_x > 0)
  rho_hat = jnp.where(measure, jax.lax.stop_gradient(loss_x), old)
  rho = threshold(step, rho_hat, warmup_steps=warmup_steps, every=every, C=C, gamma=gamma,
                  rho_min=rho_min)
  hard = rho <= rho_min
  target = jnp.where(hard, fixmatch.pseudo_targets(logits_uw, hard=True),
                     fixmatch.pseudo_targets(logits_uw, hard=False, T=T))
  l_weak = _soft_ce.soft_ce(jax.lax.stop_gradient(logits_uw), target)
  keep = after & (l_weak <= rho)
  per_row = jnp.where(keep, _soft_ce.soft_ce(logits_us, target), 0.0)
  loss_u = supervised.masked_mean(per_row, mask_u)
  aux = {'loss_x': loss_x, 'loss_u': loss_u,
         'mask_rate': supervised.masked_mean(keep.astype(jnp.float32), mask_u),
         'rho': jnp.where(after, rho, 0.0), 'hard': (after & hard).astype(jnp.float32)}
  return loss_x + lambda_u * loss_u, aux, {'rho_hat': rho_hat}
