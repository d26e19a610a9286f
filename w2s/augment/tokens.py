"""Token-id augmentations of text batches: `dict(name='tokens', mode=..., p=..., mask_id=...)`.

  mode='dropout'  word dropout: each eligible token independently, with probability p, becomes
                  `mask_id` (an [UNK] / [MASK] id; Iyyer et al. 2015, "Deep Unordered
                  Composition Rivals Syntactic Methods"; Bowman et al. 2016).
  mode='mask'     BERT-style masking (Devlin et al. 2019): exactly round(p * n) of the n eligible
                  tokens of each row are chosen; all become `mask_id`, or with `vocab_size` set
                  80% `mask_id`, 10% a random id in [0, vocab_size), 10% unchanged.
  mode='span'     span deletion: a contiguous span of round(p * n) eligible positions is deleted
                  and the rest shift left in order (as UDA-style / EDA random deletion, Wei & Zou
                  2019, but contiguous); the freed tail becomes padding (`pad_id`,
                  attention_mask 0, token_type_ids 0).

Eligible tokens are real (attention_mask 1), after the first `keep_first` positions (the [CLS] /
BOS at 0 by default), before the last `keep_last` real ones (a final [SEP]: keep_last=1) and not
in `special_ids` (e.g. [SEP]=102 between the two segments of a BERT pair: inside a deleted span it
stays). Padding is never touched; attention_mask stays contiguous, so the models' last-token
pooling and position ids stay right. Batches are right-padded ('input_ids', 'attention_mask'
int32 [B, T], optional 'token_type_ids' [B, T]; `w2s.data.text`); keep_last and span deletion
rely on it. MiniLM / BERT vocabularies: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from w2s import augment
from w2s.errors import UserError

MODES = ('dropout', 'mask', 'span')


def eligible(mask, keep_first, keep_last, special):
  """[B, T] bool: real positions in [keep_first, n - keep_last) whose id is not special."""
  pos = jnp.arange(mask.shape[1])[None, :]
  n = jnp.sum(mask > 0, axis=1, keepdims=True)
  return (mask > 0) & (pos >= keep_first) & (pos < n - keep_last) & ~special


def _exactly(rng, ok, p):
  """[B, T] bool: round(p * count) positions of `ok` per row, uniformly without replacement."""
  scores = jnp.where(ok, augment.flat(jax.random.uniform, rng, ok.shape), 2.0)
  rank = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
  k = jnp.round(p * jnp.sum(ok, axis=1, keepdims=True))
  return ok & (rank < k)


def _span(rng, ok, keep_first, p):
  """[B, T] bool: the eligible positions of one contiguous span per row (see module doc)."""
  pos = jnp.arange(ok.shape[1])[None, :]
  hi = jnp.max(jnp.where(ok, pos + 1, keep_first), axis=1, keepdims=True)  # end of eligible region
  lo = jnp.min(jnp.where(ok, pos, hi), axis=1, keepdims=True)
  length = jnp.round(p * jnp.sum(ok, axis=1, keepdims=True)).astype(jnp.int32)
  room = jnp.maximum(hi - lo - length, 0) + 1
  start = lo + jnp.floor(augment.flat(jax.random.uniform, rng, lo.shape) * room).astype(jnp.int32)
  return ok & (pos >= start) & (pos < start + length)


def delete(batch: dict, gone, pad_id: int) -> dict:
  """Drops the `gone` [B, T] positions of each row, shifting the rest left (padding at the end)."""
  order = jnp.argsort(gone, axis=1, stable=True)                          # kept first, in order
  moved = jnp.take_along_axis(gone, order, 1)
  out = {'input_ids': jnp.where(moved, pad_id, jnp.take_along_axis(batch['input_ids'], order, 1))}
  for f in ('attention_mask', 'token_type_ids'):
    if f in batch:
      out[f] = jnp.where(moved, 0, jnp.take_along_axis(batch[f], order, 1)).astype(batch[f].dtype)
  return augment.replaced(batch, **out)


def _check(mode, p, mask_id, vocab_size, keep_first, keep_last, special_ids, pad_id):
  if mode not in MODES:
    raise UserError(f"augment 'tokens': mode={mode!r} must be one of {', '.join(MODES)}")
  augment.number('tokens', 'p', p, 0.0, 1.0)
  if mode != 'span' and mask_id is None:
    raise UserError(f"augment 'tokens': mode={mode!r} needs mask_id=<the replacement token id> "
                    '(e.g. 103 [MASK] or 100 [UNK] for BERT / MiniLM vocabularies)')
  if mask_id is not None:
    augment.whole('tokens', 'mask_id', mask_id)
  if vocab_size is not None:
    if mode != 'mask':
      raise UserError(f"augment 'tokens': vocab_size applies to mode='mask' only, not {mode!r}")
    augment.whole('tokens', 'vocab_size', vocab_size, 1)
  augment.whole('tokens', 'keep_first', keep_first)
  augment.whole('tokens', 'keep_last', keep_last)
  augment.whole('tokens', 'pad_id', pad_id)
  if isinstance(special_ids, (str, int)) or not isinstance(special_ids, Sequence):
    raise UserError(f"augment 'tokens': special_ids={special_ids!r} must be a list of token ids")
  for i in special_ids:
    augment.whole('tokens', 'special_ids[...]', i)


def make(*, mode: str = 'dropout', p: float = 0.1, mask_id: int | None = None,
         vocab_size: int | None = None, keep_first: int = 1, keep_last: int = 0,
         special_ids: Sequence[int] = (), pad_id: int = 0) -> Callable[[jax.Array, dict], dict]:
  """fn(rng, batch) augmenting batch['input_ids'] (and, for 'span', the masks) [B, T]."""
  _check(mode, p, mask_id, vocab_size, keep_first, keep_last, special_ids, pad_id)
  special_ids = tuple(int(i) for i in special_ids)

  def fn(rng: jax.Array, batch: dict) -> dict:
    ids = augment.field_of('tokens', batch, 'input_ids', ndim=2, what=' (int32 [B, T] token ids)')
    mask = augment.field_of('tokens', batch, 'attention_mask', ndim=2, what=' (int32 [B, T])')
    special = jnp.isin(ids, jnp.array(special_ids, ids.dtype)) if special_ids else False
    ok = eligible(mask, keep_first, keep_last, special)
    k_pick, k_kind, k_id = jax.random.split(rng, 3)
    if mode == 'span':
      return delete(batch, _span(k_pick, ok, keep_first, p), pad_id)
    new = jnp.full_like(ids, mask_id)
    if mode == 'dropout':
      pick = ok & augment.flat(jax.random.bernoulli, k_pick, ids.shape, p=p)
    else:
      pick = _exactly(k_pick, ok, p)
      if vocab_size is not None:
        u = augment.flat(jax.random.uniform, k_kind, ids.shape)
        rand = augment.flat(jax.random.randint, k_id, ids.shape, minval=0, maxval=vocab_size,
                            dtype=ids.dtype)
        new = jnp.where(u < 0.8, new, jnp.where(u < 0.9, rand, ids))
    return augment.replaced(batch, input_ids=jnp.where(pick, new, ids))
  return fn
