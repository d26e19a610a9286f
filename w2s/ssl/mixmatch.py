"""MixMatch: sharpened average guesses on K weak views of U, MixUp of L and U, L2 on U.

Berthelot, Carlini, Goodfellow, Papernot, Oliver, Raffel 2019, "MixMatch: A Holistic Approach to
Semi-Supervised Learning" (NeurIPS), Algorithm 1; USB's mixmatch for the details:

  q_u   = Sharpen((1 / K) sum_k p(a_k(x_u)), T)           (sg; K weak views a_k of each u)
  X^    = (a(x_l), y_l),  U^ = ((a_k(x_u), q_u))_k         (B + K M rows)
  W     = Shuffle(Concat(X^, U^));  X' = MixUp(X^, W_{1..B}),  U' = MixUp(U^, W_{B+1..})
  MixUp = lambda' (x, p) + (1 - lambda') (x2, p2),  lambda' = max(lambda, 1 - lambda),
          lambda ~ Beta(alpha, alpha)
  L     = (1 / B) sum_{X'} H(p, p_model(x))
          + lambda_u w(t) (1 / K M) sum_{U'} (1 / C) ||q - p_model(u)||^2

with w(t) = clip(t / (warmup T_total), 0, 1) a linear ramp-up. Defaults: K 2, T 0.5, alpha 0.75
(the paper; USB's configs use 0.5), lambda_u 75 (the paper's CIFAR-10 and USB's configs; 250 on
SVHN), warmup 1/64 (the paper's code: the first 1/64 of training; USB's argument default, its
CIFAR configs use 0.4). The L2 term is the mean over classes of the squared difference of
probabilities, as USB's `consistency_loss(name='mse')`.

Interface (input level, see `w2s.ssl`): the module sets INPUT_LEVEL, so the SSL step calls
`loss(apply=, x=, u_view=, rng=, ...)` instead of passing logits; `apply(inputs, key)` is the
student in train mode (dropout from `key`; key None: eval mode). Deviations: one lambda' per step
for the whole batch (USB; the authors' code draws one per row); no interleaving (it only serves
BatchNorm statistics, which these models do not keep); the returned `logits_x` (accuracy
metric only) are an extra sg eval-mode pass on the unmixed labelled batch.
Inputs must be float (MixUp of token ids is meaningless): integer input fields are a UserError.
"""
import jax
import jax.numpy as jnp

from w2s.losses import _soft_ce
from w2s.ssl import mixup
from w2s.ssl import supervised

NEEDS_TEACHER = False
INPUT_LEVEL = True  # the step calls loss(apply=, x=, u_view=, rng=, ...) (see w2s.ssl)


def guess(apply, views: list[dict], keys: list[jax.Array], T: float) -> tuple[jax.Array, jax.Array]:
  """(q [M, C] = Sharpen(mean_k softmax(z(view_k)), T), sg logits of the first view [M, C])."""
  logits = [jax.lax.stop_gradient(apply(v, k)) for v, k in zip(views, keys)]
  mean = sum(jax.nn.softmax(z.astype(jnp.float32), axis=-1) for z in logits) / len(logits)
  return mixup.sharpen(mean, T), logits[0]


def mixed_losses(apply, x: dict, labels_x, mask_x, views: list[dict], q, mask_u, rng,
                 alpha: float, algo: str, unsup: str):
  """(loss_x, loss_u, lambda') of one MixUp step over Concat(x, views) with targets
  Concat(y, q, ..., q): CE on the mixed labelled rows, `unsup` ('mse' | 'ce') on the rest."""
  k_mix, k_drop = jax.random.split(rng)
  inputs = mixup.concat([x] + views, algo)
  targets = jnp.concatenate([_soft_ce.clean_labels(labels_x, mask_x)] + [q] * len(views))
  masks = [mask_x] + [mask_u] * len(views)
  lam, perm = mixup.draw(k_mix, masks, alpha)
  logits = apply(mixup.mix(inputs, lam, perm), k_drop)
  targets = mixup.mix(targets, lam, perm)
  b = mask_x.shape[0]
  loss_x = supervised.masked_mean(_soft_ce.soft_ce(logits[:b], targets[:b]), mask_x)
  mask_uu = jnp.concatenate(masks[1:])
  if unsup == 'mse':
    p = jax.nn.softmax(logits[b:].astype(jnp.float32), axis=-1)
    per_row = jnp.mean((p - targets[b:]) ** 2, axis=-1)
  else:
    per_row = _soft_ce.soft_ce(logits[b:], targets[b:])
  return loss_x, supervised.masked_mean(per_row, mask_uu), lam


def loss(*, apply, x, labels_x, mask_x, u_view, mask_u, rng, step, total_steps, state=None,
         index_u=None, K: int = 2, T: float = 0.5, alpha: float = 0.75, lambda_u: float = 75.0,
         warmup: float = 1 / 64):
  """CE(X') + lambda_u w(t) L2(U') (Berthelot et al. 2019).

  Args: see `w2s.ssl` (input level); K (2) weak views of U, T (0.5), alpha (0.75),
    lambda_u (75), warmup (1/64 of total_steps).

  Returns:
    (loss, {'loss_x', 'loss_u', 'weight' (lambda_u w(t)), 'mix_lambda'}, None,
     logits_x [B, C] (sg, unmixed), logits_uw [M, C] (sg, first weak view)).
  """
  del state, index_u
  x = mixup.float_inputs(x, 'mixmatch')
  views = [mixup.float_inputs(u_view('weak', k), 'mixmatch') for k in range(K)]
  k_guess, k_mix = jax.random.split(rng)
  q, logits_uw = guess(apply, views, list(jax.random.split(k_guess, K)), T)
  loss_x, loss_u, lam = mixed_losses(apply, x, labels_x, mask_x, views, q, mask_u, k_mix, alpha,
                                     'mixmatch', 'mse')
  weight = lambda_u * mixup.ramp(step, total_steps, warmup)
  logits_x = jax.lax.stop_gradient(apply(x, None))
  aux = {'loss_x': loss_x, 'loss_u': loss_u, 'weight': weight, 'mix_lambda': lam}
  return loss_x + weight * loss_u, aux, None, logits_x, logits_uw
