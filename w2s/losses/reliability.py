"""Reliability-aware weak supervision ("reliability"), Guo & Yang.

Guo & Yang 2024, "Improving Weak-to-Strong Generalization with Reliability-Aware
Alignment": query the weak supervisor several times (here: K members of a weak
ensemble, `batch['member_probs']` [B, K, C]) and trust each example's weak
label by how consistent the answers are:

  agreement: r_i = fraction of members whose argmax equals argmax of the mean
  entropy:   r_i = 1 - H(mean_k member_ik) / log C

then either filter (train only on r_i >= tau) or weight
(sum_i r_i CE_i / sum_i r_i). Filtering is the weighting with r replaced by
1[r >= tau], so both normalise by the kept weight. The CE target is `labels`
(the weak labels the pipeline supplies, normally the members' mean).

The train step takes sum(pe * mask) / B_real, so per_example is scaled by
B_real / sum_i w_i: the step's mean then equals sum_i w_i CE_i / sum_i w_i over
the global batch. A batch with no kept weight gives 0.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _batch_stats
from w2s.losses import _members
from w2s.losses import _soft_ce

MEASURES = ('agreement', 'entropy')
MODES = ('weight', 'filter')


def reliability(member_probs: jax.Array, measure: str = 'agreement') -> jax.Array:
  """Per-example reliability r [B] in [0, 1] from member_probs [B, K, C]."""
  if measure not in MEASURES:
    raise UserError(f'reliability measure={measure!r} is not one of {MEASURES}')
  member_probs = member_probs.astype(jnp.float32)
  mean = jnp.mean(member_probs, axis=1)  # [B, C]
  if measure == 'agreement':
    votes = jnp.argmax(member_probs, axis=-1) == jnp.argmax(mean, axis=-1)[:, None]  # [B, K]
    return jnp.mean(votes.astype(jnp.float32), axis=1)
  entropy = -jnp.sum(jax.scipy.special.xlogy(mean, mean), axis=-1)
  return 1.0 - entropy / jnp.log(mean.shape[-1])


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0,
         batch=None, measure: str = 'agreement', mode: str = 'weight',
         tau: float = 0.5) -> tuple[jax.Array, dict]:
  """w_i CE(z_i, y_w,i) B_real / sum_j w_j per example, w = r or 1[r >= tau].

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] weak soft labels y_w.
    mask: [B] 1 real, 0 padding (excluded from the normaliser, returns 0).
    step_frac: unused.
    batch: the batch dict; needs 'member_probs' [B, K, C].
    measure: 'agreement' or 'entropy' (see module docstring).
    mode: 'weight' (w = r) or 'filter' (w = 1[r >= tau]).
    tau: reliability threshold of 'filter'.

  Returns:
    (per_example [B], {'mean_reliability': mean r, 'kept_weight': sum w / B_real}).
  """
  del step_frac
  if mode not in MODES:
    raise UserError(f'reliability mode={mode!r} is not one of {MODES}')
  r = reliability(_members.member_probs(batch, logits, 'reliability',
                                       fix='label with a weak-ensemble protocol'), measure)
  r = jnp.where(mask > 0, r, 0.0)
  w = r if mode == 'weight' else (r >= tau).astype(jnp.float32)
  w = w * _batch_stats.real(mask)
  n_real = _batch_stats.count(mask)
  total = jnp.sum(w)
  scale = n_real / jnp.maximum(total, 1e-12)
  ce = _soft_ce.soft_ce(logits, _soft_ce.clean_labels(labels, mask))
  per_example = _soft_ce.zero_padding(w * scale * ce, mask)
  aux = {'mean_reliability': _batch_stats.masked_mean(r, mask),
         'kept_weight': total / jnp.maximum(n_real, 1.0)}
  return per_example, aux
