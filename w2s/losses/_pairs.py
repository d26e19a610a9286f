"""What the preference-pair losses (dpo, ipo, cdpo, wdpo, orpo) share.

A pair batch holds two responses of one prompt: logits [B, 2, T, V], batch['input_ids'] /
['loss_mask'] [B, 2, T], soft labels [B, 2] (labels[:, 0] = P(response 0 is preferred)) and, for
the DPO family, batch['ref_logp'] [B, 2], the frozen reference model's sequence log-probs.

The chosen response y_w is argmax(labels) (response 0 on ties), the other one is y_l, and
  h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)],
log pi(y|x) summed over response tokens (`w2s.models.sequence.sequence_logprob`). Padded rows
(mask 0) get h = 0 so that nothing they hold (zero labels, junk reference log-probs) can turn
into NaN; the losses then zero them.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.models import sequence


def check(name: str, logits, labels, batch, *, ref: bool = True) -> None:
  """UserError (one line, at trace time) when a pair loss gets no pair batch."""
  if logits.ndim != 4 or logits.shape[1] != 2:
    raise UserError(f'loss {name!r} takes pair logits [B, 2, T, V], got shape {logits.shape}; '
                    'train it on preference pairs with the LM apply function '
                    '(w2s.models.sequence.lm_apply_fn)')
  if labels.shape != logits.shape[:2]:
    raise UserError(f'loss {name!r} takes pair labels [B, 2], got shape {labels.shape}')
  need = ('input_ids', 'loss_mask') + (('ref_logp',) if ref else ())
  missing = [k for k in need if batch is None or k not in batch]
  if missing:
    raise UserError(f'loss {name!r} needs batch[{missing[0]!r}] (pair examples with '
                    f'{", ".join(need)}); '
                    + ('compute the reference log-probs first' if missing[0] == 'ref_logp'
                       else 'build pair examples with a loss_mask'))


def chosen(labels: jax.Array) -> jax.Array:
  """[B, 2] soft labels -> [B] int32 index of the preferred response (0 on ties)."""
  return jnp.argmax(labels, axis=-1).astype(jnp.int32)


def orient(x: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """x [B, 2] -> (x of the chosen response [B], x of the rejected one [B])."""
  idx = chosen(labels)[:, None]
  return (jnp.take_along_axis(x, idx, axis=1)[:, 0],
          jnp.take_along_axis(x, 1 - idx, axis=1)[:, 0])


def logps(logits: jax.Array, batch: dict) -> jax.Array:
  """Policy sequence log-probs [B, 2] float32 of batch['loss_mask'] tokens."""
  return sequence.sequence_logprob(logits, batch['input_ids'], batch['loss_mask'])


def margins(logits, labels, mask, batch) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(h [B], chosen log-ratio [B], rejected log-ratio [B]), all 0 on padded rows."""
  ratio = logps(logits, batch) - batch['ref_logp'].astype(jnp.float32)
  real = mask > 0
  ratio = jnp.where(real[:, None], ratio, 0.0)
  w, l = orient(ratio, labels)
  return w - l, w, l


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x [B] over real rows (0 for an all-padding batch)."""
  m = (mask > 0).astype(jnp.float32)
  return jnp.sum(jnp.where(m > 0, x, 0.0)) / jnp.maximum(jnp.sum(m), 1.0)


def zero_padding(per_example: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.where(mask > 0, per_example, 0.0).astype(jnp.float32)


def aux(h, w, l, mask, scale) -> dict:
  """The pair losses' aux: 'correct' [B] (h > 0: the implicit reward prefers the chosen
  response) and scalar means over real rows of the implicit rewards scale * log-ratio."""
  return {'correct': zero_padding((h > 0).astype(jnp.float32), mask),
          'reward_margin': masked_mean(scale * h, mask),
          'chosen_reward': masked_mean(scale * w, mask),
          'rejected_reward': masked_mean(scale * l, mask)}


def confidence(labels: jax.Array, batch) -> jax.Array:
  """The weak judge's confidence [B] float32: batch['confidence'] when present, else
  max(labels) (for soft labels p, 1 - p: max(p, 1 - p) in [0.5, 1])."""
  if batch is not None and 'confidence' in batch:
    return batch['confidence'].astype(jnp.float32).reshape(labels.shape[0])
  return jnp.max(labels.astype(jnp.float32), axis=-1)
