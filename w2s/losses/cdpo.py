"""Conservative DPO: DPO with label smoothing, for noisy preference labels.

Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO" (cDPO), as in TRL's
`label_smoothing`: with each label flipped with probability eps,
  L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h),
h the DPO margin of the chosen (argmax label) response (Rafailov et al. 2023). eps = 0 is DPO;
eps = 0.5 is flat in h. Weak-judge labels are the noisy preferences of weak-to-strong alignment.
"""
import jax

from w2s.errors import UserError
from w2s.losses import _pairs


def smoothed(h: jax.Array, beta: float, eps) -> jax.Array:
  """[B] -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h) (eps a float or [B])."""
  z = beta * h
  return -(1.0 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0, batch=None,
         beta: float = 0.1, eps: float = 0.1) -> tuple[jax.Array, dict]:
  """Conservative DPO per pair.

  Args:
    logits: [B, 2, T, V] policy next-token logits of both responses.
    labels: [B, 2] soft preference; the chosen response is argmax (response 0 on ties).
    mask: [B] 1 for real pairs, 0 for padding (padded rows return 0).
    step_frac: unused.
    batch: input_ids / loss_mask [B, 2, T], ref_logp [B, 2].
    beta: DPO inverse temperature.
    eps: probability that a label is flipped, in [0, 0.5].

  Returns:
    (per_example [B] float32, aux) with the aux of `w2s.losses.dpo`.
  """
  del step_frac
  if not 0.0 <= eps <= 0.5:
    raise UserError(f'cdpo: eps={eps} must be in [0, 0.5] (the label-flip probability)')
  _pairs.check('cdpo', logits, labels, batch)
  h, w, l = _pairs.margins(logits, labels, mask, batch)
  return _pairs.zero_padding(smoothed(h, beta, eps), mask), _pairs.aux(h, w, l, mask, beta)


loss.inputs = 'pairs'
