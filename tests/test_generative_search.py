"""Weak-to-strong search (Zhou et al., 2024) against a brute-force re-run of the algorithm: the
large model's chunks drawn by `decoding.generate` with the search's keys, every candidate rescored
by hand (numpy log-softmax over full forward passes), the top W kept by a Python sort.

One tiny GPT-2 architecture serves as large, tuned and untuned model (three param sets), so the
jitted search compiles once per (W, K, L, N, eos) setting.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s.errors import UserError
from w2s.generative import search
from w2s.models import bert, decoding, gpt2, hf_import

V, EOS, LIKED = 24, 11, 5
W, K, L, N = 2, 3, 2, 5  # N is not a multiple of L: the last chunk is one token
SETTING = dict(beam_width=W, samples_per_beam=K, chunk_length=L, max_new_tokens=N, eos_id=EOS)


def _decoder(vocab_size=V):
  return gpt2.create(num_classes=1, size='tiny', vocab_size=vocab_size, num_layers=2, d_model=32,
                     num_heads=2, mlp_dim=64, max_len=32, dropout=0.0)


MODEL = _decoder()


def _params(seed, scale=4.0):
  ids = np.ones((1, 4), np.int32)
  batch = {'input_ids': ids, 'attention_mask': ids}
  params = hf_import.init_params(MODEL, jax.random.key(seed), batch)
  # sharper logits than N(0, 0.02) init: distinct, non-uniform next-token distributions
  return jax.tree.map(lambda a: a * scale if a.ndim == 2 else a, params)


def _prefer(params, token, strength=6.0):
  """The same model with logit(token) raised by `strength` at every position: the final LayerNorm's
  bias moves along token's (tied) output embedding."""
  wte = params['backbone']['wte']['embedding']
  shift = strength * wte[token] / jnp.sum(wte[token] ** 2)
  ln_f = dict(params['backbone']['ln_f'], bias=params['backbone']['ln_f']['bias'] + shift)
  return {**params, 'backbone': {**params['backbone'], 'ln_f': ln_f}}


LARGE, UNTUNED = _prefer(_params(1), LIKED, 1.5), _params(2)  # LARGE draws LIKED ~1 time in 6
PROMPTS = np.array([[3, 4, 6, 7, 8], [9, 10, 1, 0, 0], [12, 2, 0, 0, 0], [4, 4, 4, 13, 0]],
                   np.int32)
PROMPT_MASK = (PROMPTS > 0).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _forward_fn():
  return jax.jit(lambda p, x: MODEL.apply({'params': p}, x, jnp.ones_like(x), method='lm')[0])


def _hand_logprob(params, prompt, response):
  """log pi(response | prompt) from one full forward pass, log-softmax in float64. The sequence is
  right-filled to the 32 positions with unmasked zeros: causal attention keeps them out of the
  logits that matter."""
  seq = list(prompt) + list(response)
  x = np.zeros((1, 32), np.int32)
  x[0, :len(seq)] = seq
  z = np.asarray(_forward_fn()(params, x)[0], np.float64)
  top = z.max(-1, keepdims=True)
  logp = z - top - np.log(np.exp(z - top).sum(-1, keepdims=True))
  return sum(logp[t - 1, seq[t]] for t in range(len(prompt), len(seq)))


def _reference(tuned, untuned, rng, prompts=PROMPTS, prompt_mask=PROMPT_MASK, *, beam_width=W,
               samples_per_beam=K, chunk_length=L, max_new_tokens=N, eos_id=EOS):
  """The search in plain Python: beams [B][W] of (score, response, finished), best first, and the
  last round's candidate scores [B][...]."""
  b, t = prompts.shape
  w, k, l, n = beam_width, samples_per_beam, chunk_length, max_new_tokens
  rounds = -(-n // l)
  real = [list(row[:m.sum()]) for row, m in zip(prompts, prompt_mask)]
  beams = [[(0.0, [], False)] * w for _ in range(b)]
  last = None
  for c in range(rounds):
    if all(done for row in beams for _, _, done in row):
      break
    buf = np.zeros((b * w * k, t + (rounds - 1) * l), np.int32)
    buf_mask = np.zeros_like(buf)
    for r in range(b * w * k):
      seq = real[r // (w * k)] + beams[r // (w * k)][r % (w * k) // k][1]
      buf[r, :len(seq)], buf_mask[r, :len(seq)] = seq, 1
    out = decoding.generate(MODEL, LARGE, buf, buf_mask, max_new_tokens=l, temperature=1.0,
                            rng=search.candidate_keys(rng, c, b * w * k), eos_id=eos_id)
    chunks, lengths = np.asarray(out['tokens']), np.asarray(out['mask']).sum(1)
    new_beams, last = [], []
    for i in range(b):
      candidates = []
      for j in range(w * k):
        score, resp, done = beams[i][j // k]
        if done:  # carried once, unchanged
          if j % k == 0:
            candidates.append((score, resp, done))
          continue
        r = i * w * k + j
        resp = resp + list(chunks[r, :min(lengths[r], n - len(resp))])
        score = (_hand_logprob(tuned, real[i], resp) - _hand_logprob(untuned, real[i], resp))
        candidates.append((score, resp, eos_id in resp))
      # a stable sort: ties go to the lower slot, as in lax.top_k
      order = sorted(range(len(candidates)), key=lambda j: -candidates[j][0])
      new_beams.append([candidates[j] for j in order[:w]])
      last.append([s for s, _, _ in candidates])
    beams = new_beams
  return beams, last


def _assert_matches(out, beams, n=N):
  b, w = len(beams), len(beams[0])
  tokens, mask = np.zeros((b, w, n), np.int32), np.zeros((b, w, n), np.int32)
  for i in range(b):
    for j, (_, resp, _) in enumerate(beams[i]):
      tokens[i, j, :len(resp)], mask[i, j, :len(resp)] = resp, 1
  np.testing.assert_array_equal(out['beam_tokens'], tokens)
  np.testing.assert_array_equal(out['beam_mask'], mask)
  scores = np.array([[s for s, _, _ in row] for row in beams])
  np.testing.assert_allclose(out['beam_score'], scores, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(out['tokens'], tokens[:, 0])
  np.testing.assert_allclose(out['score'], scores[:, 0], rtol=1e-5, atol=1e-5)


def _search(tuned, untuned, rng, **kw):
  setting = dict(SETTING, **kw)
  return search.search(MODEL, LARGE, MODEL, tuned, MODEL, untuned, PROMPTS, PROMPT_MASK, rng=rng,
                       return_beams=True, **setting)


def test_one_beam_one_sample_is_the_large_models_sampling():
  """W = K = 1: the large model's chunked draw with the search's keys (= unguided), scored by the
  sum of the small models' log-prob differences recomputed by hand."""
  tuned, rng = _params(3), jax.random.key(7)
  out = _search(tuned, UNTUNED, rng, beam_width=1, samples_per_beam=1)
  beams, _ = _reference(tuned, UNTUNED, rng, beam_width=1, samples_per_beam=1)
  _assert_matches(out, beams)
  plain = search.unguided(MODEL, LARGE, PROMPTS, PROMPT_MASK, max_new_tokens=N, rng=rng,
                          chunk_length=L, eos_id=EOS)
  np.testing.assert_array_equal(out['tokens'], plain['tokens'])
  np.testing.assert_array_equal(out['mask'], plain['mask'])
  assert out['tokens'].shape == (4, N) and out['score'].shape == (4,)
  assert np.all(np.abs(np.asarray(out['score'])) > 1e-3)  # the two small models do disagree


def test_equal_small_models_score_zero():
  out = _search(UNTUNED, UNTUNED, jax.random.key(1))
  assert np.all(np.asarray(out['beam_score']) == 0.0)
  assert np.all(np.asarray(out['mask'])[:, 0] == 1)


def test_guided_search_is_the_brute_force_search_and_favours_the_tuned_token():
  tuned, rng = _prefer(UNTUNED, LIKED), jax.random.key(3)
  out = _search(tuned, UNTUNED, rng)
  beams, last = _reference(tuned, UNTUNED, rng)
  _assert_matches(out, beams)
  best = np.array([max(scores) for scores in last])  # the best candidate of the final round
  np.testing.assert_allclose(out['score'], best, rtol=1e-5, atol=1e-5)
  plain = search.unguided(MODEL, LARGE, PROMPTS, PROMPT_MASK, max_new_tokens=N, rng=rng,
                          chunk_length=L, eos_id=EOS)
  liked = lambda o: int(np.sum((np.asarray(o['tokens']) == LIKED) & (np.asarray(o['mask']) == 1)))
  assert liked(out) >= liked(plain) + 4, (liked(out), liked(plain))
  # deterministic under one rng; another rng draws other candidates
  again = _search(tuned, UNTUNED, rng)
  for key in out:
    np.testing.assert_array_equal(out[key], again[key])
  other = _search(tuned, UNTUNED, jax.random.key(4))
  assert not np.array_equal(out['beam_tokens'], other['beam_tokens'])


def test_a_finished_beam_keeps_its_score_and_is_padded():
  """The tuned model likes eos itself: beams end early, are carried along, padded after eos."""
  tuned, rng = _prefer(UNTUNED, EOS), jax.random.key(5)
  out = _search(tuned, UNTUNED, rng)
  beams, _ = _reference(tuned, UNTUNED, rng)
  _assert_matches(out, beams)
  tokens, mask = np.asarray(out['beam_tokens']), np.asarray(out['beam_mask'])
  lengths = mask.sum(-1)
  ended = [(i, j) for i in range(4) for j in range(W) if lengths[i, j] < N]
  # the case under test happens: beams that ended before the last round were carried through it
  assert any(lengths[i, j] <= -(-N // L) * L - L for i, j in ended), lengths
  for i, j in ended:
    n = lengths[i, j]
    assert tokens[i, j, n - 1] == EOS and np.all(tokens[i, j, n:] == 0) and mask[i, j, :n].all()
    hand = (_hand_logprob(tuned, PROMPTS[i][:PROMPT_MASK[i].sum()], tokens[i, j, :n]) -
            _hand_logprob(UNTUNED, PROMPTS[i][:PROMPT_MASK[i].sum()], tokens[i, j, :n]))
    np.testing.assert_allclose(out['beam_score'][i, j], hand, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('change,message', [
    (dict(tuned=_decoder(16)), 'vocab sizes differ'),
    (dict(untuned=bert.create(num_classes=1, size='tiny')), 'not a decoder'),
    (dict(beam_width=0), 'beam_width must be'),
    (dict(samples_per_beam=0), 'samples_per_beam must be'),
    (dict(samples_per_beam=1.5), 'samples_per_beam must be'),
    (dict(chunk_length=0), 'chunk_length must be'),
    (dict(max_new_tokens=30), 'positions'),
    (dict(temperature=0.0), 'temperature > 0'),
    (dict(eos_id=V), 'outside the vocabulary'),
    (dict(attention_mask=np.array([[0, 1, 1, 1, 1]] * 4, np.int32)), 'right-padded'),
])
def test_bad_inputs_are_user_errors(change, message):
  args = dict(large=MODEL, large_params=LARGE, tuned=MODEL, tuned_params=UNTUNED, untuned=MODEL,
              untuned_params=UNTUNED, input_ids=PROMPTS, attention_mask=PROMPT_MASK,
              rng=jax.random.key(0), **SETTING)
  args.update(change)
  with pytest.raises(UserError, match=message):
    search.search(**args)
