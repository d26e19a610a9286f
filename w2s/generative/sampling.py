"""Batched, sharded sampling of continuations with per-row random keys (debate turns, weak answers).

`generate_rows` runs `w2s.models.decoding.generate` over prompts in fixed-shape batches (sorted by
length, prompt lengths rounded up to a multiple so few shapes compile, filler rows to a full
batch), each process feeding its share of the rows. Every row draws with its own key, derived from
its example id (`row_keys`): a row's tokens depend only on the row, never on its batch, so a
generation stopped midway and resumed (`w2s.protocols.by_id_store`) gives what an uninterrupted
one would.
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from w2s import sharding
from w2s.models import decoding


def row_keys(base: jax.Array, ids, sample: int | None = None) -> jax.Array:
  """[N] typed keys: `base` folded with each int64 id (low and high 32 bits), then with the
  sample index when given (sample j of n per prompt)."""
  ids = np.asarray(ids, np.int64)
  lo = jnp.asarray((ids & 0xFFFFFFFF).astype(np.uint32))
  hi = jnp.asarray((ids >> 32).astype(np.uint32))
  keys = jax.vmap(lambda a, b: jax.random.fold_in(jax.random.fold_in(base, a), b))(lo, hi)
  if sample is not None:
    keys = jax.vmap(lambda k: jax.random.fold_in(k, sample))(keys)
  return keys


def generate_rows(model, params, encoded: Sequence[Sequence[int]], keys: jax.Array, *, mesh,
                  batch_size: int, max_new_tokens: int, temperature: float, top_p: float,
                  eos_id: int | None, pad_id: int, length_multiple: int = 8,
                  on_batch: Callable[[int, int], None] | None = None) -> list[list[int]]:
  """The new tokens of each encoded prompt (its end-of-text token dropped), in input order.

  Args:
    model, params: a decoder TextClassifier and its params (replicated or sharded).
    encoded: N prompts as token id lists (at least one token each).
    keys: [N] typed keys, one per prompt (`row_keys`).
    mesh: the data mesh the batch is split over; batch_size divisible by its devices.
    on_batch: called with (prompts, new tokens) after each batch (progress lines).
  """
  order = np.argsort([-len(e) for e in encoded], kind='stable')
  out: list[list[int]] = [[] for _ in encoded]
  key_data = np.asarray(jax.random.key_data(keys))
  b, procs, p = batch_size, jax.process_count(), jax.process_index()
  for start in range(0, len(order), b):
    rows = order[start:start + b]
    t = -(-max(len(encoded[r]) for r in rows) // length_multiple) * length_multiple
    ids = np.full((b, t), pad_id, np.int32)
    mask = np.zeros((b, t), np.int32)
    for j, r in enumerate(rows):
      ids[j, :len(encoded[r])] = encoded[r]
      mask[j, :len(encoded[r])] = 1
    mask[len(rows):, 0] = 1  # filler rows (a fixed batch shape): one token, output dropped
    filled = np.concatenate([rows, np.repeat(rows[:1], b - len(rows))])
    local = slice(p * b // procs, (p + 1) * b // procs)  # this process's share of the rows
    batch = sharding.host_batch_to_global(
        {'input_ids': ids[local], 'attention_mask': mask[local],
         'keys': key_data[filled][local]}, mesh)
    gen = decoding.generate(model, params, batch['input_ids'], batch['attention_mask'],
                            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            rng=jax.random.wrap_key_data(batch['keys']), eos_id=eos_id,
                            pad_id=pad_id)
    gen = sharding.to_host(gen)
    counts = gen['mask'][:len(rows)].sum(axis=1)
    for j, (r, n) in enumerate(zip(rows, counts)):
      out[r] = [int(x) for x in gen['tokens'][j, :n] if int(x) != eos_id]
    if on_batch is not None:
      on_batch(len(rows), int(counts.sum()))
  return out
