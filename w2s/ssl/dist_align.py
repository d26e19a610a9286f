"""Distribution alignment: rescale weak-view predictions on U towards a target class marginal.

A reusable piece for the algorithms of `w2s.ssl`, not an algorithm itself (it has no `loss`, so
the registry does not list it). ReMixMatch (Berthelot, Carlini, Cubuk, Kurakin, Sohn, Zhang,
Raffel 2020, ICLR), AdaMatch's relative alignment (Berthelot, Roelofs, Sohn, Carlini, Kurakin
2022, ICLR) and SoftMatch's uniform alignment (Chen et al. 2023, ICLR):

  p~_t  = m p~_{t-1} + (1 - m) mean_u q_u        (the model's mean prediction on U)
  p*_t  = 1 / C                                   ('uniform': SoftMatch's UA; ReMixMatch's p(y)
                                                   on class-balanced data)
        | m p*_{t-1} + (1 - m) mean_l p_l         ('model': AdaMatch, p_l = sg softmax of the
                                                   labelled weak view)
  q~    = Normalize(q * (p*_t + eps) / (p~_t + eps)),  eps = 1e-6

with q = sg(softmax(z(a(x_u)))) [M, C]. As USB's DistAlignEMAHook (semilearn/algorithms/hooks):
momentum 0.999, the state is updated with this batch before aligning, p~ starts at the first
batch's mean (here p~ = 0 stands for USB's "None": no batch seen yet) and the 'model' target
starts uniform. Means are over the real rows (global under jit on sharded arrays); a batch with
no real row leaves that EMA unchanged.

State: {'p_model': [C] float32 (p~), 'p_target': [C] float32 (p*)}, to be merged into the
caller's state dict.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.ssl import supervised

TARGETS = ('uniform', 'model')
MOMENTUM = 0.999
EPS = 1e-6


def init_state(num_classes: int) -> dict:
  """{'p_model': [C] zeros (no batch seen), 'p_target': [C] 1/C}, float32."""
  return {'p_model': jnp.zeros((num_classes,), jnp.float32),
          'p_target': jnp.full((num_classes,), 1.0 / num_classes, jnp.float32)}


def probs(logits: jax.Array) -> jax.Array:
  """sg(softmax(logits [N, C])) in float32: the predictions alignment works on."""
  return jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)


def _ema(old, batch, any_real, momentum):
  return jnp.where(any_real, momentum * old + (1.0 - momentum) * batch, old)


def update(state: dict, probs_u: jax.Array, mask_u: jax.Array, *,
           probs_x: jax.Array | None = None, mask_x: jax.Array | None = None,
           target: str = 'uniform', momentum: float = MOMENTUM) -> dict:
  """p~ (and p* for target='model') after one batch.

  Args:
    state: {'p_model': [C], 'p_target': [C]} (other keys are passed through).
    probs_u: [M, C] sg weak-view probabilities on U; mask_u [M] 1 real, 0 padding.
    probs_x: [B, C] sg probabilities on the labelled weak view; mask_x [B] (target='model').
    target: 'uniform' (p* stays as it is) or 'model' (p* is the EMA of mean_l p_l).
  """
  if target not in TARGETS:
    raise UserError(f'distribution alignment target={target!r} is not one of {TARGETS}')
  p_model = jnp.asarray(state['p_model'], jnp.float32)
  any_u = jnp.any(mask_u > 0)
  batch_u = supervised.masked_mean(probs_u, mask_u)
  fresh = jnp.sum(p_model) <= 0  # USB: p_model is None before the first batch
  new_model = jnp.where(fresh & any_u, batch_u, _ema(p_model, batch_u, any_u, momentum))
  p_target = jnp.asarray(state['p_target'], jnp.float32)
  if target == 'model':
    if probs_x is None or mask_x is None:
      raise UserError("distribution alignment target='model' needs probs_x and mask_x (the "
                      'labelled weak-view probabilities)')
    p_target = _ema(p_target, supervised.masked_mean(probs_x, mask_x), jnp.any(mask_x > 0),
                    momentum)
  return {**state, 'p_model': new_model, 'p_target': p_target}


def align(probs_u: jax.Array, state: dict, eps: float = EPS) -> jax.Array:
  """q~ = Normalize(q * (p* + eps) / (p~ + eps)) -> [M, C] (rows sum to 1)."""
  ratio = (state['p_target'] + eps) / (state['p_model'] + eps)
  q = probs_u * ratio
  return q / jnp.sum(q, axis=-1, keepdims=True)
