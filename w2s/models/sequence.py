"""Token-level log-probabilities of a decoder, and the trainer apply functions of generative losses.

The shared data contract of sequence work: `input_ids` int32 [..., T] right-padded,
`attention_mask` [..., T], `loss_mask` float32 [..., T] = 1 at positions t whose token
input_ids[..., t] is a training target (response tokens, including the end-of-text token that
closes a response), 0 on prompt and padding. Pair (preference) batches carry one more axis,
[B, 2, T] (response 0 and response 1 of the same prompt).

The log-probability of a response y given its prompt x is
  log pi(y | x) = sum_t loss_mask[t] * log softmax(logits[t - 1])[input_ids[t]],
the sum over response tokens only of the next-token log-probabilities (Rafailov et al. 2023,
"Direct Preference Optimization", eq. 7; the same quantity as TRL's `get_batch_logps`).

Apply functions (`f(params, batch, *, train, rng)`, what `w2s.train` calls):
  lm_apply_fn(module)       -> logits [B, T, V] (or [B, 2, T, V] for pairs), for SFT / ORPO / DPO;
  logprob_apply_fn(module)  -> sequence log-probs [B] (or [B, 2]) of batch['loss_mask'] tokens;
  reward_apply_fn(module)   -> rewards [B, 2] of a 1-class TextClassifier (pooling 'last') on
                               both responses of each pair (Bradley-Terry reward models).
`module` is a w2s TextClassifier over a decoder (gpt2, llama, gpt_neox, ...), whose `lm` method
gives next-token logits. That method runs the backbone deterministically, so `train` and `rng`
do not switch on dropout in the LM apply functions (reward models use the classifier's own
dropout).
"""
from typing import Callable

import jax
import jax.numpy as jnp

from w2s.errors import UserError


def token_logprobs(logits: jax.Array, input_ids: jax.Array) -> jax.Array:
  """Next-token log-probabilities of the tokens that are there.

  Args:
    logits: [..., T, V] next-token logits (logits[..., t, :] predicts token t + 1).
    input_ids: [..., T] int token ids.

  Returns:
    [..., T] float32: out[..., t] = log_softmax(logits[..., t - 1, :])[input_ids[..., t]] for
    t >= 1, and 0 at t = 0 (the first token has no prediction).
  """
  logits = logits.astype(jnp.float32)[..., :-1, :]
  targets = input_ids[..., 1:].astype(jnp.int32)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  # log_softmax gathered at one index = picked logit - logsumexp; never builds [..., T, V] twice
  logp = picked - jax.nn.logsumexp(logits, axis=-1)
  return jnp.concatenate([jnp.zeros_like(logp[..., :1]), logp], axis=-1)


def sequence_logprob(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> jax.Array:
  """log pi(y | x): the sum of token log-probs over loss_mask tokens.

  Args:
    logits: [..., T, V] next-token logits.
    input_ids: [..., T] token ids.
    loss_mask: [..., T] 1 at response (target) tokens, 0 on prompt and padding. Position 0 has
      no prediction and counts 0 whatever its mask.

  Returns:
    [...] float32 sum_t token_logprobs[..., t] * loss_mask[..., t].
  """
  return jnp.sum(token_logprobs(logits, input_ids) * loss_mask.astype(jnp.float32), axis=-1)


def _flat(x: jax.Array) -> jax.Array:
  """[..., T] -> [N, T]."""
  return x.reshape(-1, x.shape[-1])


def lm_logits(module, params, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """Next-token logits of a decoder TextClassifier, any leading axes.

  Args:
    module: a w2s TextClassifier over a decoder (has the `lm` method).
    params: its parameter tree (the tree under 'params').
    input_ids: [..., T] right-padded token ids, e.g. [B, T] or a pair batch [B, 2, T].
    attention_mask: [..., T] 1 on real tokens.

  Returns:
    [..., T, V] float32 logits; the leading axes are flattened for the model call ([B, 2, T] ->
    [2B, T]) and restored after.
  """
  lead = input_ids.shape[:-1]
  logits = module.apply({'params': params}, _flat(input_ids), _flat(attention_mask),
                        method='lm')[0]
  return logits.astype(jnp.float32).reshape(*lead, *logits.shape[-2:])


def lm_apply_fn(module) -> Callable:
  """`apply_fn(params, batch, *, train, rng) -> logits [B, T, V]` (pairs: [B, 2, T, V]) of
  batch['input_ids'] / ['attention_mask'], for the 'tokens' and 'pairs' losses."""
  def apply_fn(params, batch, *, train, rng):
    del train, rng  # the lm method is deterministic (see the module docstring)
    return lm_logits(module, params, batch['input_ids'], batch['attention_mask'])
  return apply_fn


def logprob_apply_fn(module) -> Callable:
  """`apply_fn(params, batch, *, train, rng) -> log pi(y | x)` [B] (pairs: [B, 2]) over
  batch['loss_mask'] tokens: reference log-probs, scoring, weak-to-strong search."""
  def apply_fn(params, batch, *, train, rng):
    del train, rng
    logits = lm_logits(module, params, batch['input_ids'], batch['attention_mask'])
    return sequence_logprob(logits, batch['input_ids'], batch['loss_mask'])
  return apply_fn


def reward_apply_fn(module) -> Callable:
  """`apply_fn(params, batch, *, train, rng) -> rewards [B, 2]`: a TextClassifier with
  num_classes=1 and pooling 'last' (the last real token, Ouyang et al. 2022) applied to both
  responses of each pair (batch['input_ids'] / ['attention_mask'] [B, 2, T])."""
  def apply_fn(params, batch, *, train, rng):
    ids, mask = batch['input_ids'], batch['attention_mask']
    lead = ids.shape[:-1]
    rngs = {'dropout': rng} if (train and rng is not None) else {}
    r = module.apply({'params': params}, {'input_ids': _flat(ids), 'attention_mask': _flat(mask)},
                     train=train, rngs=rngs)
    if r.shape[-1] != 1:
      raise UserError(f'a reward model has one output, this classifier has {r.shape[-1]}; create '
                      'it with num_classes=1')
    return r.astype(jnp.float32).reshape(lead)  # [2B, 1] -> [B, 2]
  return apply_fn
