"""Bag-level proportion loss ("proportion"): match each bag's mean prediction to its label
proportion.

The proportion-matching loss of learning from label proportions: DLLP (Ardehaly & Culotta 2017,
"Co-Training for Demographic Classification Using Deep Learning from Label Proportions", ICDM
workshops, arXiv:1709.04108; also Tsai & Lin 2020, "Learning from Label Proportions with
Consistency Regularization", ACML). Javanmard et al. 2024 ("Learning from Aggregate
Responses: Instance Level versus Bag Level Loss Functions", ICLR) compare this bag-level loss with
instance-level ones such as easyllp. For a bag b with label proportion alpha_b [C] and members
i in b, with p_i = softmax(z_i):

  L_b = KL(alpha_b || pbar_b),   pbar_b = (1 / n_b) sum_{i in b} p_i,

over the n_b members of b that are real rows of the current batch (a bag cut by the batch is
matched on the part present). log pbar_b is a segment logsumexp of log p_i, so it stays finite
for extreme logits; 0 log 0 = 0 where alpha_b has zeros.

How it maps onto the trainer's per-example contract: rows are grouped by `batch['bag_id']` (int
[B], any integer ids) with `jax.ops.segment_sum` over the batch's distinct ids, and every real
member gets

  per_example_i = L_b / n_b       (0 on padding rows),

so a bag's members sum to L_b and the train step's sum(pe * mask) / B_real is sum_b L_b / B_real:
the mean of L_b over the batch's bags times (#bags / B_real), i.e. (1/k) mean_b L_b for whole bags
of size k. Padding rows (mask 0, e.g. the eval pipeline's copies of row 0, which share row 0's bag
id) are left out of n_b, pbar_b and alpha_b. alpha_b is the mean of the members' `labels` (every
member should carry its bag's proportion as its label, as for easyllp).

The loss only sees bags through the batch: with row-shuffled batches a bag's members rarely
meet (aux 'members_per_bag' near 1), and the loss then degenerates to a per-example
KL(alpha || p_i). So the loss declares `loss.group_by = 'bag_id'` and `train.fit` then permutes
whole bags instead of rows: every batch (and every gradient-accumulation microbatch) holds whole
bags, batch_size a multiple of the bag size (`w2s.data.pipeline.train_batches`).
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _batch_stats
from w2s.losses import _soft_ce


def _bag_ids(batch, b: int) -> jax.Array:
  if batch is None or 'bag_id' not in batch:
    raise UserError("loss 'proportion' needs batch['bag_id'] int [B] (which bag each example "
                    "belongs to) and each example's bag proportion as its label; add a 'bag_id' "
                    'column to the training split or pick another loss (easyllp needs no ids)')
  ids = batch['bag_id']
  if tuple(ids.shape) != (b,) or not jnp.issubdtype(ids.dtype, jnp.integer):
    raise UserError(f"batch['bag_id'] is {ids.dtype} {tuple(ids.shape)}, expected integer [B] = "
                    f'({b},): one bag id per example')
  return ids


def bag_segments(ids: jax.Array) -> jax.Array:
  """Dense segment ids [B] in [0, B): equal for rows with equal bag id (sorted distinct ids)."""
  _, seg = jnp.unique(ids, size=ids.shape[0], return_inverse=True)
  return seg.reshape(ids.shape)


def bag_kl(logits: jax.Array, alpha: jax.Array, real: jax.Array, seg: jax.Array):
  """(KL_b [B] per segment, n_b [B] real members per segment); 0 for segments without a real row.

  Args:
    logits: [B, C]; alpha: [B, C] labels; real: [B] 1.0 for real rows; seg: [B] segment ids.
  """
  b = logits.shape[0]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  n = jax.ops.segment_sum(real, seg, num_segments=b)  # [B]
  has = n > 0
  n_safe = jnp.maximum(n, 1.0)
  # Segment logsumexp of log p over real members (padding enters as -inf, i.e. p = 0).
  logp_real = jnp.where(real[:, None] > 0, logp, -jnp.inf)
  top = jax.lax.stop_gradient(jax.ops.segment_max(logp_real, seg, num_segments=b))  # [B, C]
  top = jnp.where(has[:, None], top, 0.0)
  s = jax.ops.segment_sum(jnp.exp(logp_real - top[seg]), seg, num_segments=b)
  s = jnp.where(has[:, None], s, 1.0)  # >= 1 where a member is real: the max term is exp(0)
  log_pbar = top + jnp.log(s) - jnp.log(n_safe)[:, None]
  alpha_b = jax.ops.segment_sum(real[:, None] * alpha, seg, num_segments=b) / n_safe[:, None]
  kl = jnp.sum(jax.scipy.special.xlogy(alpha_b, alpha_b)
               - jnp.where(alpha_b > 0, alpha_b * log_pbar, 0.0), axis=-1)
  return jnp.where(has, kl, 0.0), n


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0,
         batch=None) -> tuple[jax.Array, dict]:
  """KL(alpha_b || mean_{i in b} p_i) / n_b for each real member i of bag b.

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] the bag proportion alpha of each example's bag.
    mask: [B] 1 real, 0 padding (left out of every bag; returns 0).
    step_frac: unused.
    batch: the batch dict; needs 'bag_id' int [B].

  Returns:
    (per_example [B] summing to L_b over each bag's members, {'num_bags': distinct bags with a
     real row, 'members_per_bag': real rows / num_bags}).
  """
  del step_frac
  ids = _bag_ids(batch, logits.shape[0])
  real = _batch_stats.real(mask)
  seg = bag_segments(ids)
  kl, n = bag_kl(logits, _soft_ce.clean_labels(labels, mask), real, seg)
  per_example = real * kl[seg] / jnp.maximum(n[seg], 1.0)
  num_bags = jnp.sum((n > 0).astype(jnp.float32))
  aux = {'num_bags': num_bags,
         'members_per_bag': _batch_stats.count(mask) / jnp.maximum(num_bags, 1.0)}
  return _soft_ce.zero_padding(per_example, mask), aux


loss.group_by = 'bag_id'  # how the trainer knows to batch whole bags (train.batch_groups)
