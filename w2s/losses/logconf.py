"""Auxiliary confidence loss ("logconf") of Burns et al. 2023.

Burns et al. 2023, "Weak-to-Strong Generalization: Eliciting Strong
Capabilities With Weak Supervision" (arXiv:2312.09390), Sec. 4.3.2 and the
`logconf_loss_fn` of the openai/weak-to-strong release: the student is trained
to a mix of the weak labels and its own *hardened* predictions,

  target = (1 - alpha(s)) y_w + alpha(s) sg(h),  alpha(s) = aux_coef min(1, s / warmup_frac).

Binary hardening (exactly the release): t = quantile of p_0 over the batch at
level mean_B(y_w[:, 1]); h = [p_0 >= t, p_0 < t], so the share of examples
hardened to class 1 equals the weak labels' mean class-1 mass. Batch statistics
ignore padding and are over the global batch (also when sharded).

Multi-class generalisation (our choice, `harden='prior'`, the default). The
binary rule is the balanced assignment: among hard labelings that give class 1
exactly a pi_1 share (pi = the weak labels' class prior), it maximises
sum_i log p_{i, h_i} (class 1 goes to the examples with the smallest p_0). For
C > 2 we solve the same problem, "harden so that class shares match the weak
prior", with entropic optimal transport: Sinkhorn iterations (SwAV-style, eps
0.1, 100 steps) find per-class log-thresholds log t_c such that
h = onehot(argmax_c log p_c - log t_c) gives each class about a pi_c share
(within 2% of the batch in tests, even when the student's argmax puts 90% of
the batch in one class). C = 2 runs the exact quantile rule of the release.
`harden='argmax'` uses onehot(argmax p) instead (any C), which ignores the prior.

`faithful=True` reproduces the release's warmup defect: during warmup its
coefficient is step_frac * aux_coef (reaching only warmup_frac * aux_coef) and
then jumps to aux_coef; the default ramps linearly to aux_coef.
"""
import fractions
import math

import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _batch_stats
from w2s.losses import _soft_ce

HARDEN_MODES = ('prior', 'argmax')
SINKHORN_EPS = 0.1
SINKHORN_ITERS = 100


def first_step_past(warmup_frac: float, total_steps: int) -> int:
  """The least integer step with step / total_steps > warmup_frac, in exact arithmetic (the
  release compares Python floats; a float32 step / total under jit is a multiply by a rounded
  reciprocal, and at step 3 of 30 gives 0.10000000894 > 0.1)."""
  return math.floor(fractions.Fraction(warmup_frac) * total_steps) + 1


def aux_coefficient(step_frac, *, aux_coef: float = 0.5, warmup_frac: float = 0.1,
                    faithful: bool = False, step=None, total_steps: int | None = None) -> jax.Array:
  """alpha(s): weight of the student's own predictions in the target.

  Args:
    step_frac: scalar s = step / total_steps in [0, 1] (may be traced).
    aux_coef: final weight.
    warmup_frac: length of the warmup as a fraction of training.
    faithful: reproduce the original release (s * aux_coef while s <= warmup_frac,
      then aux_coef) instead of the linear ramp aux_coef * min(1, s / warmup_frac).
    step, total_steps: the integer step (may be traced) and the static total; with them the
      faithful switch is decided exactly, in integers (the trainer passes both).

  Returns:
    float32 scalar alpha.
  """
  s = jnp.asarray(step_frac, jnp.float32)
  if faithful:
    if step is not None and total_steps is not None:
      past = jnp.asarray(step) >= first_step_past(warmup_frac, int(total_steps))
    else:
      past = s > warmup_frac
    return jnp.where(past, 1.0, s) * aux_coef
  if warmup_frac <= 0:
    return jnp.asarray(aux_coef, jnp.float32)
  return aux_coef * jnp.minimum(1.0, s / warmup_frac)


def hardened_targets(probs: jax.Array, labels: jax.Array, mask: jax.Array,
                     method: str = 'prior') -> jax.Array:
  """Hardened student predictions h [B, C] (one-hot rows, no gradient).

  Args:
    probs: [B, C] student probabilities p.
    labels: [B, C] weak soft labels (their prior sets the thresholds).
    mask: [B] 1 real, 0 padding (ignored by the quantiles and the prior).
    method: 'prior' (shares match the weak prior, module docstring) or 'argmax'.

  Returns:
    [B, C] float32 one-hot targets.
  """
  if method not in HARDEN_MODES:
    raise UserError(f'logconf harden={method!r} is not one of {HARDEN_MODES}; '
                    "use 'prior' (Burns et al. thresholds) or 'argmax'")
  probs = jax.lax.stop_gradient(probs.astype(jnp.float32))
  if method == 'argmax':
    return _soft_ce.onehot_argmax(probs)
  prior = _batch_stats.weak_prior(labels, mask)
  if probs.shape[-1] == 2:
    t = _batch_stats.masked_quantile(probs[:, 0], mask, prior[1])
    return jnp.stack([probs[:, 0] >= t, probs[:, 0] < t], axis=-1).astype(jnp.float32)
  tiny = jnp.finfo(jnp.float32).tiny
  return balanced_assignment(jnp.log(jnp.maximum(probs, tiny)), prior, mask)


def balanced_assignment(logp: jax.Array, prior: jax.Array, mask: jax.Array, *,
                        eps: float = SINKHORN_EPS, iters: int = SINKHORN_ITERS) -> jax.Array:
  """Hard labels whose class shares approximately match `prior`, via Sinkhorn.

  Entropic optimal transport (Cuturi 2013; as in SwAV, Caron et al. 2020) between
  the real rows (uniform mass) and the classes (mass prior_c) with score
  log p / eps. Only the class potentials b_c matter for the row-wise argmax:
  h = onehot(argmax_c log p_c + eps b_c), i.e. per-class thresholds
  log t_c = -eps b_c.

  Args:
    logp: [B, C] student log-probabilities.
    prior: [C] target class shares (sum 1).
    mask: [B] 1 real, 0 padding (padding carries no mass).
    eps: entropic regularisation; smaller is closer to the exact assignment
      but needs more iterations.
    iters: Sinkhorn iterations.

  Returns:
    [B, C] float32 one-hot rows.
  """
  is_real = (mask > 0)[:, None]
  n = jnp.maximum(_batch_stats.count(mask), 1.0)
  scores = jnp.where(is_real, logp / eps, -jnp.inf)
  log_prior = jnp.log(jnp.maximum(prior, 1e-30))

  def step(_, b):
    a = -jax.scipy.special.logsumexp(scores + b, axis=1, keepdims=True)  # rows sum to 1
    a = jnp.where(is_real, a, -jnp.inf)
    return log_prior + jnp.log(n) - jax.scipy.special.logsumexp(scores + a, axis=0)

  b = jax.lax.fori_loop(0, iters, step, jnp.zeros(logp.shape[-1], jnp.float32))
  b = jnp.where(jnp.isfinite(b), b, 0.0)  # an all-padding batch
  return _soft_ce.onehot_argmax(logp + eps * b)


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac, batch=None,
         aux_coef: float = 0.5, warmup_frac: float = 0.1, faithful: bool = False,
         harden: str = 'prior', step=None, total_steps: int | None = None
         ) -> tuple[jax.Array, dict]:
  """CE(z, (1 - alpha) y_w + alpha sg(h)) per example (Burns et al. 2023).

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] weak soft labels y_w.
    mask: [B] 1 real, 0 padding (padding is ignored by the statistics, returns 0).
    step_frac: scalar s = step / total_steps.
    batch: unused.
    aux_coef: final weight alpha of the hardened predictions (release: 0.5).
    warmup_frac: fraction of training over which alpha ramps up (release: 0.1).
    faithful: reproduce the release's warmup schedule (see `aux_coefficient`).
    harden: 'prior' (Burns thresholds; Sinkhorn-balanced for C > 2) or 'argmax'.
    step, total_steps: integer step and total (from the trainer; see `aux_coefficient`).

  Returns:
    (per_example [B], {'alpha': alpha(s), 'hard_prior_gap': max_c |mean h_c - pi_c|}).
  """
  del batch
  labels = _soft_ce.clean_labels(labels, mask)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  h = jax.lax.stop_gradient(hardened_targets(probs, labels, mask, harden))
  alpha = aux_coefficient(step_frac, aux_coef=aux_coef, warmup_frac=warmup_frac,
                          faithful=faithful, step=step, total_steps=total_steps)
  target = (1.0 - alpha) * labels + alpha * h
  per_example = _soft_ce.zero_padding(_soft_ce.soft_ce(logits, target), mask)
  gap = jnp.max(jnp.abs(_batch_stats.masked_mean(h, mask) - _batch_stats.weak_prior(labels, mask)))
  return per_example, {'alpha': alpha, 'hard_prior_gap': gap}

