"""Weak-to-strong search (Zhou et al., 2024, "Weak-to-Strong Search: Align Large Language Models via
Searching over Small Language Models"): test-time chunk-level beam search over a frozen large
decoder, guided by a tuned and an untuned small decoder of the same vocabulary.

Beam width W, K samples per beam, chunk length L. Each round samples K continuations of L tokens
from every beam with the large model, scores each of the W * K candidates of a prompt by

  score(y) = sum over its chunks y_c of  log pi_tuned(y_c | x, y_<c) - log pi_untuned(y_c | x, y_<c)
           = log pi_tuned(y | x) - log pi_untuned(y | x)        (response tokens only, eos included)

and keeps the top W. A beam that emitted eos stops growing: it keeps its score and is carried into
the next round once (its K - 1 other sample slots are dropped, so it cannot fill the beam with
copies of itself). After ceil(N / L) rounds, or when every beam has ended, the best beam wins.

Shapes: prompts [B, T]; rows R = B * W * K (prompt-major, then beam, then sample). The responses
live in a fixed buffer of M = ceil(N / L) * L slots, so the whole search (a `lax.while_loop` over
rounds) compiles once; when N is not a multiple of L the last round is shorter (the large model
still draws L tokens, the ones past N are dropped).

Cost: sampling uses the KV-cache sampler `w2s.models.decoding.generate` within a chunk (its prefill
re-reads the prompt and the chunks so far, [R, T + (rounds - 1) * L]); scoring recomputes the prefix
every round: one full forward pass per small model over [R, T + M] tokens per round, i.e.
rounds * R * (T + M) small-model tokens instead of R * (T + M) with a cache, and [R, T + M, V]
float32 logits in memory at once. Fine for small guides; cache them for long responses.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from w2s.errors import UserError
from w2s.models import decoding
from w2s.models.sequence import lm_logits, token_logprobs


def candidate_keys(rng, chunk, num_rows: int):
  """Sampling keys [R] of round `chunk`: row r draws with fold_in(fold_in(rng, chunk), r)."""
  base = jax.random.fold_in(rng, chunk)
  return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.arange(num_rows))


def pack(prompt, prompt_mask, response, response_mask, pad_id: int):
  """Right-padded prompt [R, T] + response [R, M] (its mask a prefix) -> one right-padded
  sequence: ids [R, T + M], attention mask [R, T + M] int32, loss mask [R, T + M] float32 (1 on
  response tokens: the sequence contract's `loss_mask`)."""
  t, m = prompt.shape[1], response.shape[1]
  p = prompt_mask.sum(axis=1)[:, None]
  n = response_mask.sum(axis=1)[:, None]
  s = jnp.arange(t + m)[None, :]
  in_prompt = s < p
  in_response = (s >= p) & (s < p + n)
  at = jnp.broadcast_to(jnp.minimum(s, t - 1), in_prompt.shape)
  from_prompt = jnp.take_along_axis(prompt, at, axis=1)
  from_response = jnp.take_along_axis(response, jnp.clip(s - p, 0, m - 1), axis=1)
  ids = jnp.where(in_prompt, from_prompt, jnp.where(in_response, from_response, pad_id))
  return ids, (in_prompt | in_response).astype(jnp.int32), in_response.astype(jnp.float32)


def log_ratio(tuned, tuned_params, untuned, untuned_params, ids, mask, loss_mask):
  """[R] sum over loss_mask tokens of log pi_tuned - log pi_untuned: one forward pass each."""
  logp = lambda model, params: token_logprobs(lm_logits(model, params, ids, mask), ids)
  return jnp.sum((logp(tuned, tuned_params) - logp(untuned, untuned_params)) * loss_mask, axis=-1)


@functools.partial(jax.jit, static_argnames=(
    'large', 'tuned', 'untuned', 'beam_width', 'samples_per_beam', 'chunk_length',
    'max_new_tokens', 'temperature', 'top_p', 'eos_id', 'pad_id'))
def _search(large, large_params, tuned, tuned_params, untuned, untuned_params, input_ids,
            attention_mask, rng, *, beam_width, samples_per_beam, chunk_length, max_new_tokens,
            temperature, top_p, eos_id, pad_id):
  """Beams (tokens [B, W, N], mask [B, W, N], score [B, W] best first); tuned None: no scoring."""
  b, t = input_ids.shape
  w, k, l, n = beam_width, samples_per_beam, chunk_length, max_new_tokens
  rounds = -(-n // l)
  m, r = rounds * l, b * w * k
  prompt = jnp.repeat(input_ids, w * k, axis=0)  # [R, T]
  prompt_mask = jnp.repeat(attention_mask, w * k, axis=0)
  width = t + (rounds - 1) * l  # what the sampler reads: the prompt and all but the last chunk
  first = jnp.arange(r) % k == 0  # the sample slot that carries a finished beam

  def expand(x):  # [B, W, ...] -> [R, ...]: each beam K times
    return jnp.repeat(x, k, axis=1).reshape((r,) + x.shape[2:])

  def select(x, idx):  # [R, ...] -> [B, W, ...]: the kept candidates of each prompt
    x = x.reshape((b, w * k) + x.shape[1:])
    return jnp.take_along_axis(x, idx.reshape((b, w) + (1,) * (x.ndim - 2)), axis=1)

  def body(state):
    c, resp, resp_mask, score, done = state
    resp, resp_mask, score, ended = map(expand, (resp, resp_mask, score, done))
    ids, mask, _ = pack(prompt, prompt_mask, resp, resp_mask, pad_id)
    out = decoding.generate(large, large_params, ids[:, :width], mask[:, :width],
                            max_new_tokens=l, temperature=temperature, top_p=top_p,
                            rng=candidate_keys(rng, c, r), eos_id=eos_id, pad_id=pad_id)
    grow = out['mask'] * (~ended)[:, None] * (c * l + jnp.arange(l) < n)[None, :]
    chunk = jnp.where(grow > 0, out['tokens'], pad_id)
    resp = jax.lax.dynamic_update_slice(resp, chunk, (0, c * l))
    resp_mask = jax.lax.dynamic_update_slice(resp_mask, grow, (0, c * l))
    done = ended
    if eos_id is not None:
      done = ended | jnp.any((chunk == eos_id) & (grow > 0), axis=1)
    if tuned is not None:
      new = log_ratio(tuned, tuned_params, untuned, untuned_params,
                      *pack(prompt, prompt_mask, resp, resp_mask, pad_id))
      score = jnp.where(ended, score, new)  # a finished beam keeps its score ...
    score = jnp.where(ended & ~first, -jnp.inf, score)  # ... and is carried once
    score, idx = jax.lax.top_k(score.reshape(b, w * k), w)
    return c + 1, select(resp, idx), select(resp_mask, idx), score, select(done, idx)

  def cond(state):
    c, _, _, _, done = state
    return (c < rounds) & ~jnp.all(done)

  init = (jnp.int32(0), jnp.full((b, w, m), pad_id, jnp.int32), jnp.zeros((b, w, m), jnp.int32),
          jnp.zeros((b, w), jnp.float32), jnp.zeros((b, w), bool))
  _, resp, resp_mask, score, _ = jax.lax.while_loop(cond, body, init)
  return resp[..., :n], resp_mask[..., :n], score


def _check(models, input_ids, attention_mask, *, beam_width, samples_per_beam, chunk_length,
           max_new_tokens, temperature, top_p, eos_id):
  """One-line UserErrors for inputs the search cannot take."""
  for name, model in models.items():
    if not hasattr(getattr(model, 'backbone', None), 'config') or not hasattr(
        model.backbone.config, 'kv_cache_shape'):
      raise UserError(f'{name} model {type(getattr(model, "backbone", model)).__name__} is not a '
                      'decoder; weak-to-strong search needs gpt2, llama or gpt_neox decoders')
  vocab = {name: model.backbone.config.vocab_size for name, model in models.items()}
  if len(set(vocab.values())) > 1:
    raise UserError(f'vocab sizes differ ({vocab}); the large, tuned and untuned models must share '
                    'one tokenizer')
  for name, value in (('beam_width', beam_width), ('samples_per_beam', samples_per_beam),
                      ('chunk_length', chunk_length), ('max_new_tokens', max_new_tokens)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise UserError(f'{name} must be an integer >= 1, got {value!r}')
  if not temperature >= 0 or not 0 < top_p <= 1:
    raise UserError(f'need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}')
  ids, mask = np.asarray(input_ids), np.asarray(attention_mask)
  if ids.ndim != 2 or ids.shape != mask.shape:
    raise UserError(f'input_ids {ids.shape} and attention_mask {mask.shape} must both be [B, T]')
  if mask.sum(axis=1).min() < 1 or np.any(np.diff(mask, axis=1) > 0):
    raise UserError('prompts must be right-padded with at least one real token each '
                    '(attention_mask rows 1...1 0...0)')
  v = next(iter(vocab.values()))
  if eos_id is not None and not 0 <= eos_id < v:
    raise UserError(f'eos_id {eos_id} is outside the vocabulary [0, {v})')
  slots = ids.shape[1] + -(-max_new_tokens // chunk_length) * chunk_length
  for name, model in models.items():
    limit = getattr(model.backbone.config, 'position_limit', None)
    if limit is not None and slots > limit:
      raise UserError(f'prompt length {ids.shape[1]} + max_new_tokens {max_new_tokens} rounded up '
                      f'to whole chunks of {chunk_length} exceeds the {name} model\'s {limit} '
                      'positions; shorten the prompts or max_new_tokens')


def search(large, large_params, tuned, tuned_params, untuned, untuned_params, input_ids,
           attention_mask, *, beam_width: int, samples_per_beam: int, chunk_length: int,
           max_new_tokens: int, rng: jax.Array, temperature: float = 1.0, top_p: float = 1.0,
           eos_id: int | None = None, pad_id: int = 0,
           return_beams: bool = False) -> dict[str, jax.Array]:
  """Weak-to-strong search (Zhou et al., 2024): a large model's response steered by two small ones.

  Args:
    large, large_params: the frozen large decoder (`gpt2` / `llama` / `gpt_neox.create`, an
      untied Llama or NeoX with lm_head=True) and its params.
    tuned, tuned_params / untuned, untuned_params: the small model after and before tuning (same
      vocabulary as the large one).
    input_ids, attention_mask: int32 [B, T] right-padded prompts, at least one real token each.
    beam_width: W beams kept per prompt.
    samples_per_beam: K chunks sampled from each beam per round (rows R = B * W * K).
    chunk_length: L tokens per chunk.
    max_new_tokens: N; when not a multiple of L the last chunk is N mod L tokens long.
    rng: sampling key (round c, row r draws with `candidate_keys(rng, c, R)[r]`).
    temperature, top_p: the large model's sampling (temperature > 0; top_p 1 = no nucleus).
    eos_id: a beam that emits it stops growing and keeps its score.
    pad_id: fills the slots after a beam's end.
    return_beams: also return every final beam, best first.

  Returns:
    'tokens' int32 [B, N] the best beam's response, 'mask' int32 [B, N] 1 on its tokens (eos
    included), 'score' float32 [B] its log pi_tuned - log pi_untuned; with return_beams also
    'beam_tokens' [B, W, N], 'beam_mask' [B, W, N], 'beam_score' [B, W] sorted by score.
  """
  _check({'large': large, 'tuned': tuned, 'untuned': untuned}, input_ids, attention_mask,
         beam_width=beam_width, samples_per_beam=samples_per_beam, chunk_length=chunk_length,
         max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, eos_id=eos_id)
  if temperature == 0:
    raise UserError('search samples its candidates: set temperature > 0 (greedy decoding is '
                    'unguided(..., temperature=0))')
  tokens, mask, score = _search(
      large, large_params, tuned, tuned_params, untuned, untuned_params,
      jnp.asarray(input_ids, jnp.int32), jnp.asarray(attention_mask, jnp.int32), rng,
      beam_width=int(beam_width), samples_per_beam=int(samples_per_beam),
      chunk_length=int(chunk_length), max_new_tokens=int(max_new_tokens),
      temperature=float(temperature), top_p=float(top_p), eos_id=eos_id, pad_id=pad_id)
  out = {'tokens': tokens[:, 0], 'mask': mask[:, 0], 'score': score[:, 0]}
  if return_beams:
    out.update(beam_tokens=tokens, beam_mask=mask, beam_score=score)
  return out


def unguided(large, large_params, input_ids, attention_mask, *, max_new_tokens: int,
             rng: jax.Array, temperature: float = 1.0, top_p: float = 1.0,
             eos_id: int | None = None, pad_id: int = 0,
             chunk_length: int | None = None) -> dict[str, jax.Array]:
  """The large model's own sample (best-of-1, same token budget): the baseline of the search.

  With `chunk_length` (the search's L) it draws chunk by chunk with the search's keys, so it is
  exactly `search` with beam_width = samples_per_beam = 1 minus the scoring (a paired comparison
  under one rng); None draws all N tokens in one KV-cached pass. Args as in `search`;
  temperature 0 decodes greedily. Returns 'tokens' int32 [B, N], 'mask' int32 [B, N].
  """
  chunk_length = max_new_tokens if chunk_length is None else chunk_length
  _check({'large': large}, input_ids, attention_mask, beam_width=1, samples_per_beam=1,
         chunk_length=chunk_length, max_new_tokens=max_new_tokens, temperature=temperature,
         top_p=top_p, eos_id=eos_id)
  tokens, mask, _ = _search(
      large, large_params, None, None, None, None, jnp.asarray(input_ids, jnp.int32),
      jnp.asarray(attention_mask, jnp.int32), rng, beam_width=1, samples_per_beam=1,
      chunk_length=int(chunk_length), max_new_tokens=int(max_new_tokens),
      temperature=float(temperature), top_p=float(top_p), eos_id=eos_id, pad_id=pad_id)
  return {'tokens': tokens[:, 0], 'mask': mask[:, 0]}
