"""SimMatch: labels propagated through a labelled memory bank (semantic + instance similarity).

Zheng, You, Qian, Wang, Xu, Qian, Wang, Wang, Chen, Xu 2022, "SimMatch: Semi-supervised Learning
with Similarity Matching" (CVPR); as USB's simmatch (the CIFAR branch: no EMA teacher, bank EMA).
The model gets a projection head (PROJECTION = 128, `w2s.ssl_heads`): z = normalize(proj(h)).
A bank holds one embedding per labelled row, k_j [K, D], and its label y_j [K] (K = |L|).
With p = DA(sg softmax(z(a(x_u)))) (distribution alignment to uniform, `w2s.ssl.dist_align`):

  q^w_j = softmax_j(sg(z^w) . k_j / T)                 instance similarity of the weak view [M, K]
  q^s_j = softmax_j(z^s . k_j / T)                     ... of the strong view (trained)
  q^_j  = q^w_j p[y_j] / sum_i q^w_i p[y_i]            unfolding: the class's confidence scales it
  p^_c  = alpha p_c + (1 - alpha) sum_{j: y_j = c} q^w_j     aggregation: the bank's vote
  L = CE(x_l) + lambda_u mean_u[1(max p^ >= tau) H(p^, p(A(x_u)))] + lambda_in mean_u H(q^, q^s)

then k_j <- normalize(m k_j + (1 - m) sg(z(a(x_l)))), y_j <- y for the rows j of the labelled
batch (m = ema_bank 0.7); the loss uses the bank as it was before this step (as USB).

Choices (documented deviations from USB):
  * one bank slot per labelled row, K = |L| (USB's K is its labelled set's length, which it
    repeats to a minimum size for tiny label counts: the same rows in several slots);
  * USB zeroes the instance term and uses p^ = p during its first epoch (the slots still hold
    random vectors with label 0); here the same holds until every slot has been written once
    (state 'seen'), the first pass over L, with no extra setting;
  * distribution alignment is the EMA form (momentum 0.999) of `dist_align`, not USB's queue
    of the last 256 batch means;
  * T is the similarity temperature (USB's configs: 0.1), not a sharpening one.

Defaults (USB's configs): tau 0.95, lambda_u 1, lambda_in 1, T 0.1, smoothing_alpha 0.9,
ema_bank 0.7; PROJECTION 128 (USB's proj_size, a constant here). Means are over the real
rows; padding rows of L write nothing.

State: {'bank': [K, D] unit rows (random at first, as USB), 'labels': [K] int32, 'seen': [K]
float32 (1 once written), 'p_model': [C], 'p_target': [C]}.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce
from w2s.ssl import dist_align as da
from w2s.ssl import supervised
from w2s.ssl_heads import normalize

NEEDS_TEACHER = False
PROJECTION = 128  # width of the projection head (USB's proj_size); ssl_step reads it


def init_state(*, num_classes: int, num_unlabelled: int | None = None,
               num_labelled: int | None = None, rng=None, **hparams) -> dict:
  """The bank [num_labelled, PROJECTION] of random unit rows (key rng, default PRNGKey(0)), its
  labels 0, nothing seen, and the alignment's state."""
  del num_unlabelled, hparams
  if not num_labelled:
    raise UserError('simmatch keeps a bank of the labelled rows: pass init_state(num_labelled=|L|)')
  rng = jax.random.PRNGKey(0) if rng is None else rng
  bank = normalize(jax.random.normal(rng, (num_labelled, PROJECTION), jnp.float32))
  return {'bank': bank, 'labels': jnp.zeros((num_labelled,), jnp.int32),
          'seen': jnp.zeros((num_labelled,), jnp.float32), **da.init_state(num_classes)}


def propagate(p, feats_uw, bank, labels, *, T: float, smoothing_alpha: float):
  """(q^ [M, K] unfolded instance targets, p^ [M, C] smoothed class targets), both sg.

  Args: p [M, C] aligned weak-view probabilities; feats_uw [M, D] weak-view embeddings; bank
  [K, D]; labels [K] int32; T the similarity temperature; smoothing_alpha the weight of p."""
  feats_uw, bank = jax.lax.stop_gradient(feats_uw), jax.lax.stop_gradient(bank)
  q = jax.nn.softmax(feats_uw.astype(jnp.float32) @ bank.T / T, axis=-1)
  unfolded = q * p[:, labels]
  unfolded = unfolded / jnp.sum(unfolded, axis=-1, keepdims=True)
  votes = q @ jax.nn.one_hot(labels, p.shape[-1], dtype=jnp.float32)
  return unfolded, smoothing_alpha * p + (1.0 - smoothing_alpha) * votes


def update_bank(state: dict, feats_x, labels_x, mask_x, index_x, ema_bank: float) -> dict:
  """Bank rows index_x [B] <- normalize(m k + (1 - m) sg(feats_x [B, D])), their labels the
  argmax of labels_x [B, C], marked seen; padding rows (mask_x 0) write nothing."""
  bank = state['bank']
  k = bank.shape[0]
  idx = jnp.where(mask_x > 0, index_x, k)  # out of range: dropped by the scatters
  rows = normalize(ema_bank * bank[jnp.minimum(idx, k - 1)]
                   + (1.0 - ema_bank) * jax.lax.stop_gradient(feats_x).astype(jnp.float32))
  y = jnp.argmax(labels_x, axis=-1).astype(jnp.int32)
  return {**state, 'bank': bank.at[idx].set(rows, mode='drop'),
          'labels': state['labels'].at[idx].set(y, mode='drop'),
          'seen': state['seen'].at[idx].set(1.0, mode='drop')}


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None, feats_x=None,
         feats_uw=None, feats_us=None, index_x=None, tau: float = 0.95, lambda_u: float = 1.0,
         lambda_in: float = 1.0, T: float = 0.1, smoothing_alpha: float = 0.9,
         ema_bank: float = 0.7):
  """CE(x_l) + lambda_u mean_u[mask H(p^, p(A(x_u)))] + lambda_in mean_u H(q^, q^s), new bank.

  Args: see `w2s.ssl`; besides the logits, feats_x [B, D], feats_uw [M, D], feats_us [M, D]
    (unit-norm embeddings of a(x_l), a(x_u), A(x_u); feats_us trained), index_x [B] int32 rows of
    L (distinct among real rows); state from `init_state` (required); tau (0.95), lambda_u (1),
    lambda_in (1), T (0.1), smoothing_alpha (0.9), ema_bank (0.7).

  Returns:
    (loss, {'loss_x', 'loss_u', 'loss_in', 'mask_rate', 'bank_seen' (share of slots written)},
     new state).
  """
  del step, total_steps, index_u, logits_ut
  if state is None:
    raise UserError('simmatch keeps a labelled memory bank: pass state=init_state(...)')
  if feats_x is None or feats_uw is None or feats_us is None or index_x is None:
    raise UserError('simmatch needs the embeddings feats_x / feats_uw / feats_us and index_x; '
                    'train it through train.ssl (w2s.ssl_step passes them)')
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  probs_uw = da.probs(logits_uw)
  new_state = da.update(dict(state), probs_uw, mask_u, target='uniform')
  p = da.align(probs_uw, new_state)
  unfolded, smoothed = propagate(p, feats_uw, state['bank'], state['labels'], T=T,
                                 smoothing_alpha=smoothing_alpha)
  warm = jnp.all(state['seen'] > 0)  # USB's first epoch: the bank is not filled yet
  target = jnp.where(warm, smoothed, p)
  keep = jnp.max(target, axis=-1) >= tau
  loss_u = supervised.masked_mean(
      jnp.where(keep, _soft_ce.soft_ce(logits_us, target), 0.0), mask_u)
  log_qs = jax.nn.log_softmax(feats_us.astype(jnp.float32)
                              @ jax.lax.stop_gradient(state['bank']).T / T, axis=-1)
  loss_in = jnp.where(warm, supervised.masked_mean(-jnp.sum(unfolded * log_qs, -1), mask_u), 0.0)
  new_state = update_bank(new_state, feats_x, labels_x, mask_x, index_x, ema_bank)
  aux = {'loss_x': loss_x, 'loss_u': loss_u, 'loss_in': loss_in,
         'mask_rate': supervised.masked_mean(keep.astype(jnp.float32), mask_u),
         'bank_seen': jnp.mean(new_state['seen'])}
  return loss_x + lambda_u * loss_u + lambda_in * loss_in, aux, new_state
