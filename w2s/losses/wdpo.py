"""Confidence-weighted DPO: trust a weak judge's preference as much as the judge does.

A weak judge labels each pair with a soft preference p = P(y_0 preferred); its confidence is
c = max(p, 1 - p) in [0.5, 1] (or batch['confidence'] [B] when the examples carry one). Two ways
to use it (methods.md, "Generative weak-to-strong"):
  mode='weight':    L = c * (-log sigmoid(beta h))         (DPO, Rafailov et al. 2023, weighted)
  mode='smoothing': L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h), eps = 1 - c
                    (conservative DPO, Mitchell 2023, with a per-pair flip probability; with c
                    from the labels this is the soft-label cross-entropy of the Bradley-Terry
                    model sigmoid(beta h) against the judge's p).
h is the DPO margin of the chosen (argmax label) response. With c = 1 both are DPO.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _pairs
from w2s.losses import cdpo

MODES = ('weight', 'smoothing')


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0, batch=None,
         beta: float = 0.1, mode: str = 'weight') -> tuple[jax.Array, dict]:
  """Confidence-weighted DPO per pair.

  Args:
    logits: [B, 2, T, V] policy next-token logits of both responses.
    labels: [B, 2] soft preference of the weak judge; chosen = argmax (response 0 on ties).
    mask: [B] 1 for real pairs, 0 for padding (padded rows return 0).
    step_frac: unused.
    batch: input_ids / loss_mask [B, 2, T], ref_logp [B, 2], optional confidence [B].
    beta: DPO inverse temperature.
    mode: 'weight' (c times the DPO loss) or 'smoothing' (cDPO with eps = 1 - c).

  Returns:
    (per_example [B] float32, aux): the aux of `w2s.losses.dpo` plus 'confidence' (mean c).
  """
  del step_frac
  if mode not in MODES:
    raise UserError(f'wdpo: unknown mode {mode!r}; use one of {MODES}')
  _pairs.check('wdpo', logits, labels, batch)
  h, w, l = _pairs.margins(logits, labels, mask, batch)
  c = jnp.where(mask > 0, _pairs.confidence(labels, batch), 1.0)
  if mode == 'weight':
    per = -c * jax.nn.log_sigmoid(beta * h)
  else:
    per = cdpo.smoothed(h, beta, 1.0 - c)
  out = _pairs.aux(h, w, l, mask, beta)
  out['confidence'] = _pairs.masked_mean(c, mask)
  return _pairs.zero_padding(per, mask), out


loss.inputs = 'pairs'
