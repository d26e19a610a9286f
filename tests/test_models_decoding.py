"""KV-cache decoding: the same tokens as recomputing the whole forward pass at every step."""
import jax
import numpy as np
import pytest

from w2s.errors import UserError
from w2s.models import bert, decoding, gpt2, hf_import, llama

NEW = 6


def _model(family, size, vocab_size=64):
  model = family.create(num_classes=2, size=size, lm_head=True, dropout=0.0, vocab_size=vocab_size)
  rs = np.random.RandomState(0)
  ids = rs.randint(1, vocab_size, (3, 9)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 5:] = 0
  mask[2, 1:] = 0  # a one-token prompt
  ids[mask == 0] = 7  # padding id that is also a real token: only the mask may tell them apart
  params = hf_import.init_params(model, jax.random.key(1), {'input_ids': ids, 'attention_mask': mask})
  # sharper logits than N(0, 0.02) init, so greedy choices are far from ties
  params = jax.tree.map(lambda a: a * 8 if a.ndim == 2 else a, params)
  return model, params, ids, mask


def _greedy_by_recomputing(model, params, ids, mask, steps):
  """Greedy tokens [B, steps] and their logits [B, steps, V]: a full forward pass per step.

  The growing sequences sit right-padded in a fixed [B, T + steps] buffer (one compilation);
  causal attention never lets a real token see the padding after it.
  """
  b, t = ids.shape
  buf = np.zeros((b, t + steps), np.int32)
  buf[:, :t] = ids
  lengths = mask.sum(1)
  forward = jax.jit(lambda p, i, m: model.apply({'params': p}, i, m, method='lm')[0])
  tokens, logits_seen = [], []
  for _ in range(steps):
    valid = (np.arange(t + steps)[None] < lengths[:, None]).astype(np.int32)
    logits = np.asarray(forward(params, buf, valid))[np.arange(b), lengths - 1]  # [B, V]
    tokens.append(logits.argmax(-1))
    logits_seen.append(logits)
    buf[np.arange(b), lengths] = tokens[-1]
    lengths = lengths + 1
  return np.stack(tokens, 1), np.stack(logits_seen, 1)


@pytest.mark.parametrize('family,size', [(gpt2, 'tiny'), (llama, 'tiny'), (llama, 'qwen2-tiny')])
def test_cached_greedy_equals_full_recompute(family, size):
  model, params, ids, mask = _model(family, size)
  out = decoding.generate(model, params, ids, mask, max_new_tokens=NEW)
  assert out['tokens'].shape == (3, NEW) and np.all(out['mask'] == 1)
  expected, _ = _greedy_by_recomputing(model, params, ids, mask, NEW)
  np.testing.assert_array_equal(out['tokens'], expected)


def test_eos_stops_a_row_and_the_loop():
  model, params, ids, mask = _model(llama, 'tiny')
  free = decoding.generate(model, params, ids, mask, max_new_tokens=NEW)['tokens']
  eos = int(free[0, 2])  # row 0 emits this at step 2 (maybe earlier too)
  out = decoding.generate(model, params, ids, mask, max_new_tokens=NEW, eos_id=eos, pad_id=-1)
  first = list(np.asarray(free[0])).index(eos)
  assert np.asarray(out['mask'][0]).tolist() == [1] * (first + 1) + [0] * (NEW - first - 1)
  assert np.all(np.asarray(out['tokens'][0, first + 1:]) == -1)
  for row in range(3):  # until its own eos, every row is what it was without an eos
    n = int(out['mask'][row].sum())
    np.testing.assert_array_equal(out['tokens'][row, :n], free[row, :n])


def test_sampling_follows_the_tempered_distribution():
  model, params, ids, mask = _model(gpt2, 'tiny', vocab_size=16)
  n = 8000
  prompt, pmask = np.repeat(ids[:1, :4], n, 0), np.ones((n, 4), np.int32)
  _, logits = _greedy_by_recomputing(model, params, ids[:1, :4], pmask[:1], 1)
  temperature = 2.0
  probs = np.asarray(jax.nn.softmax(logits[0, 0] / temperature))
  out = decoding.generate(model, params, prompt, pmask, max_new_tokens=1,
                          temperature=temperature, rng=jax.random.key(3))
  freq = np.bincount(np.asarray(out['tokens'][:, 0]), minlength=probs.size) / n
  assert 0.5 * np.abs(freq - probs).sum() < 0.05  # total variation; <= 0.02 expected from noise
  # a nucleus holding less than the top token's mass is the top token only
  top = decoding.generate(model, params, prompt[:8], pmask[:8], max_new_tokens=1,
                          temperature=temperature, top_p=0.5 * probs.max(), rng=jax.random.key(4))
  assert np.all(np.asarray(top['tokens']) == np.argmax(probs))


def test_top_p_truncates_the_tail():
  logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32)).repeat(2000, 0)
  toks = decoding.sample_logits(logits, jax.random.key(0), temperature=1.0, top_p=0.7,
                                greedy=False)
  freq = np.bincount(np.asarray(toks), minlength=4) / 2000
  assert freq[2] == 0 and freq[3] == 0  # outside the 0.8-mass nucleus {0, 1}
  np.testing.assert_allclose(freq[:2], [0.625, 0.375], atol=0.04)  # renormalised 0.5 : 0.3


@pytest.mark.parametrize('top_p', [0.05, 0.5, 0.9, 0.95, 0.999])
def test_nucleus_by_bisection_equals_the_sorted_nucleus(top_p):
  """The bisected cutoff keeps exactly the tokens a sort and cumulative sum keep (the smallest
  top set whose mass reaches top_p, the crossing token included), on peaked and flat rows."""
  rs = np.random.RandomState(0)
  logits = np.concatenate([rs.randn(16, 3000) * 4, rs.randn(16, 3000) * 0.05]).astype(np.float32)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
  cutoff = np.asarray(decoding.nucleus_cutoff(jax.nn.softmax(logits, axis=-1), top_p))
  exact = 0
  for row, c in zip(probs, cutoff):
    order = np.argsort(-row)
    cum = np.cumsum(row[order])
    k = int(np.searchsorted(cum, top_p)) + 1  # the first prefix reaching top_p (float64)
    kept = set(np.flatnonzero(row >= c))
    n = len(kept)
    assert kept == set(order[:n]), top_p  # a top prefix ...
    if n != k:  # ... the smallest reaching top_p, up to float32 rounding of the mass
      assert abs(cum[min(n, k) - 1] - top_p) < 1e-5, (top_p, n, k, cum[min(n, k) - 1])
    exact += n == k
  assert exact >= len(probs) - 2, exact


def test_decoding_rejects_encoders_and_too_long_prompts():
  model, params, ids, mask = _model(gpt2, 'tiny')
  with pytest.raises(UserError, match='learned positions'):
    decoding.generate(model, params, ids, mask, max_new_tokens=model.backbone.config.max_len)
  with pytest.raises(UserError, match='not a decoder'):
    decoding.generate(bert.create(num_classes=2, size='tiny'), None, ids, mask, max_new_tokens=2)
