"""Autoregressive decoding with a KV cache for the decoder families (gpt2, llama, gpt_neox), jitted.

Greedy decoding, or sampling with a temperature and nucleus (top-p) truncation (Holtzman et al.,
2020, "The Curious Case of Neural Text Degeneration"). Used to write debate transcripts (Lang et
al., "Debate Helps Weak-to-Strong Generalization").

Prompts arrive right-padded like every text batch ('input_ids', 'attention_mask' [B, T]). They are
moved to the right edge of the T slots (left padding), so all rows decode in lockstep: slot T + i
holds the i-th new token of every row, its position id being the row's own prompt length + i.
The cache has S = T + max_new_tokens slots; pad slots are masked out by the key mask, never by
token id.
"""
import functools

import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.models import classifier


def _left_align(ids, mask):
  """Right-padded [B, T] -> left-padded [B, T] (each row rolled right by its padding)."""
  t = ids.shape[1]
  shift = t - mask.sum(axis=1)
  src = (jnp.arange(t)[None, :] - shift[:, None]) % t
  return jnp.take_along_axis(ids, src, axis=1), jnp.take_along_axis(mask, src, axis=1)


def sample_logits(logits, rng, *, temperature, top_p, greedy: bool, nucleus: bool = True):
  """Next tokens [B] from logits [B, V]: argmax, or a draw from the top-p nucleus of softmax(z/T).

  `rng`: one key for the batch, or a key per row ([B] keys: each row's draw depends only on its
  own key, not on which other rows share the batch). `nucleus` False (top_p = 1: the whole
  distribution) skips the nucleus.

  The nucleus is the smallest set of most likely tokens whose mass reaches top_p (the token that
  crosses it included). Its least likely member's probability p_k is the largest c with
  mass(p >= c) >= top_p, found by bisection (`NUCLEUS_BISECTIONS` halvings of [0, max p]: exact
  up to a 2^-40 fraction of the top probability) instead of sorting the vocabulary, which on a
  CPU took most of a GPT-2-small decoding step (40 of ~95 ms at batch 8, V = 30,522)."""
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if not nucleus:
    return _categorical(rng, logits)
  probs = jax.nn.softmax(logits, axis=-1)
  cutoff = nucleus_cutoff(probs, top_p)
  logits = jnp.where(probs >= cutoff[:, None], logits, -jnp.inf)
  return _categorical(rng, logits)


NUCLEUS_BISECTIONS = 40


def nucleus_cutoff(probs, top_p):
  """[B] the probability of the least likely token of each row's top-p nucleus (see
  `sample_logits`): invariant mass(p >= lo) >= top_p, and mass(p >= hi) < top_p unless hi is
  the top probability itself (then it is the cutoff: the most likely token is always kept)."""
  mass = lambda c: jnp.sum(jnp.where(probs >= c[:, None], probs, 0.0), axis=-1)
  top = jnp.max(probs, axis=-1)

  def halve(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    ok = mass(mid) >= top_p
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo, _ = jax.lax.fori_loop(0, NUCLEUS_BISECTIONS, halve, (jnp.zeros_like(top), top))
  return jnp.where(mass(top) >= top_p, top, lo)


def _categorical(rng, logits):
  if _per_row(rng):
    return jax.vmap(lambda k, z: jax.random.categorical(k, z))(rng, logits).astype(jnp.int32)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _per_row(rng) -> bool:
  """Whether `rng` is a key per row: [B] typed keys, or [B, 2] raw uint32 ones."""
  typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
  return rng.ndim == (1 if typed else 2)


def _fold_in(rng, i):
  """fold_in for one key or a key per row."""
  if _per_row(rng):
    return jax.vmap(lambda k: jax.random.fold_in(k, i))(rng)
  return jax.random.fold_in(rng, i)


def init_cache(model, batch_size: int, num_slots: int, dtype) -> list[dict]:
  """Zero KV cache: per layer {'k', 'v'}: [B, S, Hkv, Dh]."""
  layers, kv_heads, head_dim = model.backbone.config.kv_cache_shape
  zeros = lambda: jnp.zeros((batch_size, num_slots, kv_heads, head_dim), dtype)
  return [{'k': zeros(), 'v': zeros()} for _ in range(layers)]


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'greedy', 'eos_id',
                                             'pad_id', 'nucleus'))
def _generate(model, params, input_ids, attention_mask, rng, temperature, top_p, *,
              max_new_tokens, greedy, eos_id, pad_id, nucleus=True):
  b, t = input_ids.shape
  n = max_new_tokens
  variables = {'params': params}
  ids, mask = _left_align(input_ids, attention_mask)
  lengths = mask.sum(axis=1)
  key_mask = jnp.concatenate([mask, jnp.ones((b, n), mask.dtype)], axis=1)  # [B, S]
  cache = init_cache(model, b, t + n, model.backbone.dtype)
  logits, cache = model.apply(variables, ids, key_mask, positions=classifier.default_positions(mask),
                              cache=cache, cache_index=0, method='lm')
  sample = functools.partial(sample_logits, temperature=temperature, top_p=top_p, greedy=greedy,
                             nucleus=nucleus)
  first = sample(logits[:, -1], _fold_in(rng, 0))
  tokens = jnp.full((b, n), pad_id, jnp.int32).at[:, 0].set(first)
  valid = jnp.zeros((b, n), jnp.int32).at[:, 0].set(1)
  done = first == eos_id if eos_id is not None else jnp.zeros((b,), bool)

  def cond(state):
    i, _, _, done, _ = state
    return (i < n) & ~jnp.all(done)

  def body(state):
    i, tokens, valid, done, cache = state
    prev = tokens[:, i - 1]
    logits, cache = model.apply(variables, prev[:, None], key_mask,
                                positions=(lengths + i - 1)[:, None], cache=cache,
                                cache_index=t + i - 1, method='lm')
    tok = sample(logits[:, -1], _fold_in(rng, i))
    tokens = tokens.at[:, i].set(jnp.where(done, pad_id, tok))
    valid = valid.at[:, i].set((~done).astype(jnp.int32))
    if eos_id is not None:
      done = done | (tok == eos_id)
    return i + 1, tokens, valid, done, cache

  _, tokens, valid, _, _ = jax.lax.while_loop(cond, body, (1, tokens, valid, done, cache))
  return tokens, valid


def generate(model, params, input_ids, attention_mask, *, max_new_tokens: int,
             temperature: float = 0.0, top_p: float = 1.0, rng: jax.Array | None = None,
             eos_id: int | None = None, pad_id: int = 0) -> dict[str, jax.Array]:
  """Continues right-padded prompts with a decoder from `gpt2` / `llama` / `gpt_neox.create`.

  Args:
    model: a TextClassifier whose backbone is GPT-2, Llama (Qwen2, Mistral) or GPT-NeoX (an
      untied Llama or GPT-NeoX, such as Pythia, needs lm_head=True).
    params: its params (from `hf_import.init_params`, or a trained state's).
    input_ids, attention_mask: int32 [B, T] right-padded prompts, at least one real token each.
    max_new_tokens: N.
    temperature: 0 for greedy decoding; > 0 samples from softmax(logits / temperature).
    top_p: nucleus mass kept when sampling (1.0 = the whole distribution).
    rng: key for sampling (required when temperature > 0), or [B] keys, one per row: a row's
      tokens then do not depend on the other rows of the batch (debate transcripts).
    eos_id: a row stops after emitting it; the loop stops when every row has.
    pad_id: fills the slots after a row's eos.

  Returns:
    'tokens' int32 [B, N] new tokens, 'mask' int32 [B, N] 1 for generated ones (eos included).
  """
  if not hasattr(model.backbone.config, 'kv_cache_shape'):
    raise UserError(f'{type(model.backbone).__name__} is not a decoder; decode with gpt2, llama '
                    'or gpt_neox')
  limit = getattr(model.backbone.config, 'position_limit', None)  # learned position tables
  if limit is not None and input_ids.shape[1] + max_new_tokens > limit:
    raise UserError(f'prompt length {input_ids.shape[1]} + max_new_tokens {max_new_tokens} exceeds '
                    f'the {limit} learned positions; shorten the prompts or max_new_tokens')
  greedy = temperature == 0
  if not greedy and rng is None:
    raise UserError('sampling (temperature > 0) needs rng=jax.random.key(...)')
  rng = jax.random.key(0) if rng is None else rng
  tokens, valid = _generate(model, params, jnp.asarray(input_ids, jnp.int32),
                            jnp.asarray(attention_mask, jnp.int32), rng,
                            jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p),
                            max_new_tokens=max_new_tokens, greedy=greedy, eos_id=eos_id,
                            pad_id=pad_id, nucleus=top_p < 1.0)
  return {'tokens': tokens, 'mask': valid}
