"""Co-supervised learning (CSL): the student picks one specialist teacher per example ("csl").

Liu & Alahi 2024, "Co-Supervised Learning: Improving Weak-to-Strong Generalization with
Hierarchical Mixture of Experts" (github.com/YuejiangLIU/csl, `vision/multi_weak_strong_csl.py`).
K weak teachers specialise on subsets of the classes (`ensemble=dict(size=K, specialists=...)`:
member k's probabilities are exactly 0 outside its classes); batch['member_probs'] [B, K, C].

Teacher assignment (their `hard_assign`): the student's predicted class c_i = argmax z_i picks
the teacher whose classes contain it; here, generally, the teacher most confident in c_i,
k_i = argmax_k y_ik[c_i], which is that specialist when the subsets are disjoint (every other
teacher gives c_i probability 0) and the most confident of them when they overlap. The target
is that teacher's soft label y_i = y_{i k_i} (their `soft_teacher=True`).

Noise filter (their `denoise_criterion='top{k}'`): the keep rate r = the fraction of examples
whose teacher label argmax y_i is among the student's top-k classes, then the r-fraction of
examples with the lowest student cross-entropy on that hard label is kept
(`get_conservative_estimate` + `get_student_rank`); `select='topk'` keeps exactly the examples
whose teacher label is in the student's top-k instead; 'all' keeps everything. The loss is the
mean CE over the kept real rows (they retrain on the kept subset).

Deviation: CSL runs in rounds: a generalist teacher trains a student, whose predictions then
assign and filter for the next round's specialists. Here it is online, in one run: for
step_frac < `warmup` the student learns the pipeline's labels (the members' mean, standing for
the generalist) with no filter; after it the *current* student (stop-gradient) assigns and
filters, batch by batch (r and the ranks are statistics of the global batch).
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _batch_stats
from w2s.losses import _members
from w2s.losses import _soft_ce

SELECTS = ('rank', 'topk', 'all')


def assign(logits: jax.Array, member_probs: jax.Array) -> jax.Array:
  """k_i int [B]: the teacher most confident in the student's predicted class."""
  pred = jnp.argmax(logits, axis=-1)                                   # [B]
  conf = jnp.take_along_axis(member_probs, pred[:, None, None], axis=-1)[..., 0]  # [B, K]
  return jnp.argmax(conf, axis=-1)


def in_topk(logits: jax.Array, label: jax.Array, k: int) -> jax.Array:
  """[B] bool: label [B] (int) is among the k largest logits (ties: a higher-ranked class first)."""
  above = jnp.sum(logits > jnp.take_along_axis(logits, label[:, None], -1), axis=-1)
  return above < k


def keep_mask(logits, target, mask, *, select: str, topk: int) -> jax.Array:
  """[B] float32 1 for the rows the noise filter keeps (real rows only)."""
  real = _batch_stats.real(mask)
  if select == 'all':
    return real
  hard = jnp.argmax(target, axis=-1)
  agree = in_topk(logits, hard, topk).astype(jnp.float32) * real
  if select == 'topk':
    return agree
  rate = jnp.sum(agree) / jnp.maximum(jnp.sum(real), 1.0)
  ce = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), hard[:, None], -1)[:, 0]
  ce = jnp.where(real > 0, ce, jnp.inf)                # padding ranks last
  ranks = jnp.argsort(jnp.argsort(ce, stable=True), stable=True)
  return (ranks < rate * jnp.sum(real)).astype(jnp.float32) * real


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0, batch=None,
         warmup: float = 0.2, topk: int = 3, select: str = 'rank') -> tuple[jax.Array, dict]:
  """keep_i CE(z_i, y_{i k_i}) B_real / sum_j keep_j per example (after warm-up).

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] the pipeline's weak labels (the members' mean): the warm-up target.
    mask: [B] 1 real, 0 padding (returns 0, excluded from every batch statistic).
    step_frac: fraction of training done; below `warmup` the target is `labels`, unfiltered.
    batch: reads 'member_probs' [B, K, C] (specialists: 0 outside their classes).
    warmup: fraction of training before the student assigns teachers and filters.
    topk: k of the agreement filter (their default 'top3').
    select: 'rank' (their rule), 'topk' or 'all' (see the module docstring).

  Returns:
    (per_example [B], {'kept': kept fraction of real rows, 'teacher_k': fraction of real rows
                       assigned to teacher k (0 during warm-up is not special-cased)}).
  """
  if select not in SELECTS:
    raise UserError(f'csl select={select!r} is not one of {SELECTS}')
  if not isinstance(topk, int) or topk < 1:
    raise UserError(f'csl topk={topk!r} must be an int >= 1 (their default: 3)')
  probs = _members.member_probs(batch, logits, 'csl',
                                fix='give the weak role ensemble=dict(size=K, specialists=...)')
  z = jax.lax.stop_gradient(logits.astype(jnp.float32))
  real = _batch_stats.real(mask)
  k_i = assign(z, probs)                                                # [B]
  chosen = jnp.take_along_axis(probs, k_i[:, None, None], axis=1)[:, 0]  # [B, C]
  warm = step_frac < warmup
  target = jnp.where(warm, labels.astype(jnp.float32), chosen)
  target = _soft_ce.clean_labels(target, mask)
  keep = jnp.where(warm, real, keep_mask(z, target, mask, select=select, topk=topk))
  n_real = _batch_stats.count(mask)
  kept = jnp.sum(keep)
  scale = n_real / jnp.maximum(kept, 1e-12)
  per_ex = _soft_ce.zero_padding(keep * scale * _soft_ce.soft_ce(logits, target), mask)
  share = jnp.sum(jax.nn.one_hot(k_i, probs.shape[1]) * real[:, None], 0) / jnp.maximum(n_real, 1)
  aux = {'kept': kept / jnp.maximum(n_real, 1.0)}
  aux.update({f'teacher_{j}': share[j] for j in range(probs.shape[1])})
  return per_ex, aux
