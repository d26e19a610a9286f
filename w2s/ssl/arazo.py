"""Arazo et al.: soft pseudo-labels refreshed each epoch, MixUp, a labelled quota, R_A and R_H.

Arazo, Ortego, Albert, O'Connor, McGuinness 2020, "Pseudo-Labeling and Confirmation Bias in Deep
Semi-Supervised Learning" (IJCNN), eqs. 1-4; the authors' code (EricArazo/PseudoLabeling,
utils_ssl.py: `loss_mixup_reg_ep`, `train_CrossEntropy`) for the details:

  h~_u   = the stored soft pseudo-label of u: sg softmax(z(a(x_u))) from the last time u was seen
  t      = y_l on the B labelled rows, h~_u on the M unlabelled rows (targets, sg)
  MixUp  x'_i = lam x_i + (1 - lam) x_perm(i),  t'_i = lam t_i + (1 - lam) t_perm(i)
         over all B + M rows of the batch (one lam ~ Beta(alpha, alpha) per step)
  h_i    = softmax(z(x'_i));  hbar_c = (1 / N) sum_i h_ic   (N real rows of the mixed batch)
  L      = (1 / N) sum_i H(t'_i, h_i) + lambda_a R_A + lambda_h R_H
  R_A    = sum_c pi_c log(pi_c / hbar_c)        (pi: uniform, or the labelled class prior)
  R_H    = -(1 / N) sum_i sum_c h_ic log h_ic
  then   h~_u <- sg softmax(z_eval(a(x_u))) for the batch's unlabelled rows (the refresh)

Their per-epoch refresh: the authors store each row's prediction while the epoch runs and
overwrite the soft labels at its end. Here each row's soft label is overwritten right after the
step that saw it; the SSL step permutes U afresh every epoch and shows each row once per epoch,
so a row's target is always its prediction from the previous epoch, as theirs. A row not seen
yet (all-zero stored label) takes its current prediction, which is their relabelling of U after
the warm-up. The refresh pass runs in eval mode (no dropout: their `drop_extra_forward`).

Labelled quota ("a minimum number of labelled rows per batch", their `labeled_batch_size`): the
SSL step draws B labelled and mu B unlabelled rows per update, so every batch holds exactly B
labelled rows, a share 1 / (1 + mu) of its rows. Their CIFAR recipe, 16 labelled of 100, is
batch_size 16 with unlabelled_ratio 5 (16 of 96). Every row counts alike in the mean.

Warm-up: their recipe first trains 10 epochs on L alone (~50 steps at 500 labels, a sliver of
the 400 epochs), then labels U. `warmup` (a fraction of total_steps, default 0) does this
online: before it the unlabelled rows are left out of the loss and MixUp (treated as padding)
but their soft labels are already refreshed.

Defaults (theirs): alpha 1 (MixUp Beta), lambda_a 0.8 (`reg1`), lambda_h 0.4 (`reg2`), prior
'uniform' ('labelled': pi = the class mean of the labelled rows seen so far, a running count
in the state; for imbalanced L). Deviations: MixUp's lambda' = max(lam, 1 - lam) (`w2s.ssl.mixup`,
shared with MixMatch; the loss is a mean over rows that treats every row alike, so its
distribution is unchanged); their R_A drops the constant sum_c pi_c log pi_c (same gradient),
here it is kept so R_A >= 0 is the KL divergence of eq. 3. Float inputs only.

Interface (input level, see `w2s.ssl`). State: {'soft_labels': [N_u, C] float32 (rows of U,
all zero = not seen yet)} and, with prior='labelled', {'label_count': [C] float32}.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce
from w2s.ssl import mixup
from w2s.ssl import supervised

NEEDS_TEACHER = False
INPUT_LEVEL = True  # the step calls loss(apply=, x=, u_view=, rng=, ...) (see w2s.ssl)
PRIORS = ('uniform', 'labelled')


def _check_prior(prior: str) -> None:
  if prior not in PRIORS:
    raise UserError(f'arazo prior={prior!r} is not one of {PRIORS}; use uniform (balanced data) '
                    'or labelled (the class mean of L)')


def init_state(*, num_classes: int, num_unlabelled: int, prior: str = 'uniform',
               **hparams) -> dict:
  """{'soft_labels': [N_u, C] zeros} (+ {'label_count': [C] zeros} for prior='labelled')."""
  del hparams
  _check_prior(prior)
  state = {'soft_labels': jnp.zeros((num_unlabelled, num_classes), jnp.float32)}
  if prior == 'labelled':
    state['label_count'] = jnp.zeros((num_classes,), jnp.float32)
  return state


def regularisers(logits: jax.Array, mask: jax.Array, prior: jax.Array):
  """(R_A, R_H) of eqs. 3-4 over the real rows of logits [N, C]; prior pi [C] sums to 1."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  h = jnp.exp(logp)
  hbar = supervised.masked_mean(h, mask)
  r_a = jnp.sum(jax.scipy.special.xlogy(prior, prior) - prior * jnp.log(hbar))
  r_h = supervised.masked_mean(-jnp.sum(h * logp, axis=-1), mask)
  return r_a, r_h


def targets_u(state: dict, index_u, probs_now: jax.Array, mask_u) -> tuple[jax.Array, jax.Array]:
  """(t [M, C]: stored soft labels, or the current prediction where none is stored yet;
  refreshed soft_labels [N_u, C] with probs_now written at the real rows' index_u)."""
  stored = jnp.asarray(state['soft_labels'], jnp.float32)
  rows = jnp.asarray(index_u, jnp.int32)
  old = jnp.take(stored, rows, axis=0, mode='clip')
  t = jnp.where(jnp.sum(old, -1, keepdims=True) > 0, old, probs_now)
  write = jnp.where(mask_u > 0, rows, stored.shape[0])  # padding: out of range, dropped
  return t, stored.at[write].set(probs_now, mode='drop')


def _prior(state: dict, labels, mask_x, prior: str):
  """(pi [C], state with the labelled running count updated for prior='labelled')."""
  c = labels.shape[-1]
  if prior == 'uniform':
    return jnp.full((c,), 1.0 / c, jnp.float32), state
  count = state['label_count'] + jnp.sum(jnp.where(mask_x[:, None] > 0, labels, 0.0), axis=0)
  total = jnp.sum(count)
  pi = jnp.where(total > 0, count / jnp.maximum(total, 1e-12), 1.0 / c)
  return pi, {**state, 'label_count': count}


def loss(*, apply, x, labels_x, mask_x, u_view, mask_u, rng, step, total_steps, state=None,
         index_u=None, alpha: float = 1.0, lambda_a: float = 0.8, lambda_h: float = 0.4,
         prior: str = 'uniform', warmup: float = 0.0):
  """Mixed soft CE + lambda_a R_A + lambda_h R_H (Arazo et al. 2020), and the refreshed labels.

  Args: see `w2s.ssl` (input level); state from `init_state` and index_u [M] are required;
    alpha (1), lambda_a (0.8), lambda_h (0.4), prior ('uniform' | 'labelled'), warmup (0: the
    fraction of total_steps that trains on L alone).

  Returns:
    (loss, {'loss_x', 'loss_u' (mixed CE at the labelled / unlabelled positions), 'reg_a',
     'reg_h', 'mix_lambda', 'warm' (1 once U is in the loss), 'seen_frac' (share of U with a
     stored soft label)}, new state, logits_x [B, C] (sg, unmixed, eval mode),
     logits_uw [M, C] (sg, weak view, eval mode)).
  """
  _check_prior(prior)
  if state is None or index_u is None:
    raise UserError('arazo keeps a soft pseudo-label per row of U: pass '
                    'state=init_state(num_classes=C, num_unlabelled=N) and index_u')
  x = mixup.float_inputs(x, 'arazo')
  weak = mixup.float_inputs(u_view('weak', 0), 'arazo')
  labels = _soft_ce.clean_labels(labels_x, mask_x)
  logits_uw = jax.lax.stop_gradient(apply(weak, None))
  probs_now = jax.nn.softmax(logits_uw.astype(jnp.float32), axis=-1)
  t_u, soft = targets_u(state, index_u, probs_now, mask_u)
  pi, new_state = _prior(state, labels, mask_x, prior)
  new_state = {**new_state, 'soft_labels': soft}

  warm = jnp.asarray(step, jnp.float32) >= warmup * total_steps
  mask_uu = jnp.where(warm, mask_u, 0.0).astype(jnp.float32)
  k_mix, k_drop = jax.random.split(rng)
  masks = [mask_x, mask_uu]
  lam, perm = mixup.draw(k_mix, masks, alpha)
  inputs = mixup.mix(mixup.concat([x, weak], 'arazo'), lam, perm)
  t = mixup.mix(jnp.concatenate([labels, t_u]), lam, perm)
  logits = apply(inputs, k_drop)
  mask = jnp.concatenate(masks)
  ce = _soft_ce.soft_ce(logits, t)
  r_a, r_h = regularisers(logits, mask, pi)
  b = mask_x.shape[0]
  aux = {'loss_x': supervised.masked_mean(ce[:b], mask_x),
         'loss_u': supervised.masked_mean(ce[b:], mask_uu), 'reg_a': r_a, 'reg_h': r_h,
         'mix_lambda': lam, 'warm': warm.astype(jnp.float32),
         'seen_frac': jnp.mean((jnp.sum(soft, -1) > 0).astype(jnp.float32))}
  total = supervised.masked_mean(ce, mask) + lambda_a * r_a + lambda_h * r_h
  logits_x = jax.lax.stop_gradient(apply(x, None))
  return total, aux, new_state, logits_x, logits_uw
