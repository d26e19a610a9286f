"""w2s.models.sequence: token / sequence log-probs, the pair axis of lm_logits, the apply functions.

The shift is checked on hand-made distributions; the sequence log-probs of tiny random GPT-2 and
Qwen2 checkpoints (transformers, saved with save_pretrained and imported by w2s) must equal the
torch sum of log-softmax-gathered response tokens within 1e-4 relative, on right-padded pair
batches with a prompt / response loss mask.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_models_hf_import import SMALL, VOCAB, _save, needs_transformers, torch, transformers
from w2s.errors import UserError
from w2s.models import gpt2, hf_import, llama, sequence

T = 9


def test_token_logprobs_shift_and_shape():
  rs = np.random.RandomState(0)
  probs = rs.dirichlet(np.ones(5), (2, 3, 4))                  # [2, 3, T=4, V=5]
  logits = np.log(probs) + rs.normal(0, 3, (2, 3, 4, 1))       # a per-position shift: same softmax
  ids = rs.randint(0, 5, (2, 3, 4))
  out = sequence.token_logprobs(jnp.asarray(logits, jnp.bfloat16), ids)  # bf16 in, f32 out
  assert out.shape == (2, 3, 4) and out.dtype == jnp.float32
  want = np.zeros((2, 3, 4))
  for idx in np.ndindex(2, 3):
    for t in range(1, 4):
      want[idx + (t,)] = np.log(probs[idx + (t - 1, ids[idx + (t,)])])
  got = sequence.token_logprobs(jnp.asarray(logits, jnp.float32), ids)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(got)[..., 0] == 0)
  # the sum over masked positions; position 0 never counts
  mask = rs.randint(0, 2, (2, 3, 4)).astype(np.float32)
  mask[..., 0] = 1
  seq = sequence.sequence_logprob(jnp.asarray(logits, jnp.float32), ids, mask)
  assert seq.shape == (2, 3)
  np.testing.assert_allclose(seq, (want * mask).sum(-1), rtol=1e-5)


def _pair_batch(b=3):
  """Right-padded pairs [b, 2, T]: a shared prompt of 2-4 tokens, responses of different
  lengths (one filling the row), padding with id 0."""
  rs = np.random.RandomState(1)
  ids = rs.randint(1, VOCAB, (b, 2, T)).astype(np.int32)
  prompt = np.array([2, 3, 4])[:b, None, None]
  length = np.array([[9, 5], [6, 8], [5, 7]])[:b, :, None]
  t = np.arange(T)[None, None]
  ids[:, 1, :2] = ids[:, 0, :2]
  attn = (t < length).astype(np.int32)
  ids[attn == 0] = 0
  loss_mask = ((t >= prompt) & (t < length)).astype(np.float32)
  return {'input_ids': ids, 'attention_mask': attn, 'loss_mask': loss_mask}


def _torch_logprob(hf_model, ids, attn, loss_mask):
  """sum_t loss_mask[t] log_softmax(logits[t - 1])[ids[t]] in torch, per row of [N, T]."""
  with torch.no_grad():
    logits = hf_model(input_ids=torch.tensor(ids, dtype=torch.long),
                      attention_mask=torch.tensor(attn)).logits.float()
    lp = torch.log_softmax(logits[:, :-1], -1).gather(
        -1, torch.tensor(ids[:, 1:, None], dtype=torch.long))[..., 0]
  return (lp.numpy() * loss_mask[:, 1:]).sum(-1)


def _hf_model(family):
  if family == 'gpt2':
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    return transformers.GPT2LMHeadModel(cfg), gpt2
  cfg = transformers.Qwen2Config(**SMALL, tie_word_embeddings=False)  # an untied LM head
  return transformers.Qwen2ForCausalLM(cfg), llama


@needs_transformers
@pytest.mark.parametrize('family', ['gpt2', 'qwen2'])
def test_sequence_logprob_matches_transformers(tmp_path, family):
  hf_model, lib = _hf_model(family)
  hf_model = _save(hf_model, tmp_path)
  model = lib.create(num_classes=1, pretrained=str(tmp_path), lm_head=True)
  batch = _pair_batch()
  params = hf_import.init_params(model, jax.random.key(0), {k: batch[k][:, 0] for k in
                                                            ('input_ids', 'attention_mask')})
  if family == 'qwen2':
    assert 'unembed' in params['backbone']
  flat = {k: v.reshape(-1, T) for k, v in batch.items()}
  want = _torch_logprob(hf_model, flat['input_ids'], flat['attention_mask'],
                        flat['loss_mask']).reshape(3, 2)
  logp = jax.jit(sequence.logprob_apply_fn(model), static_argnames='train')
  got = logp(params, batch, train=False, rng=None)
  assert got.shape == (3, 2) and got.dtype == jnp.float32
  assert np.all(want < -1)  # real sums over several tokens, nothing trivially zero
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # the same on an unpaired [B, T] batch of responses 0
  single = {k: v[:, 0] for k, v in batch.items()}
  np.testing.assert_allclose(logp(params, single, train=True, rng=jax.random.key(1)),
                             want[:, 0], rtol=1e-4)


@needs_transformers
def test_lm_logits_pair_axis_is_a_reshape(tmp_path):
  hf_model = _save(_hf_model('gpt2')[0], tmp_path)
  model = gpt2.create(num_classes=1, pretrained=str(tmp_path))
  batch = _pair_batch()
  params = hf_import.init_params(model, jax.random.key(0), {k: batch[k][:, 0] for k in
                                                            ('input_ids', 'attention_mask')})
  pairs = sequence.lm_apply_fn(model)(params, batch, train=False, rng=None)
  assert pairs.shape == (3, 2, T, VOCAB) and pairs.dtype == jnp.float32
  for k in range(2):
    one = sequence.lm_logits(model, params, batch['input_ids'][:, k],
                             batch['attention_mask'][:, k])
    assert one.shape == (3, T, VOCAB)
    np.testing.assert_allclose(pairs[:, k], one, rtol=1e-5, atol=1e-5)
  # response 1 of pair 0 differs from response 0: the two halves did not get mixed up
  assert np.abs(np.asarray(pairs[0, 0, 3]) - np.asarray(pairs[0, 1, 3])).max() > 1e-3
  with torch.no_grad():
    ref = hf_model(input_ids=torch.tensor(batch['input_ids'][:, 1], dtype=torch.long),
                   attention_mask=torch.tensor(batch['attention_mask'][:, 1])).logits.numpy()
  real = batch['attention_mask'][:, 1].astype(bool)
  np.testing.assert_allclose(np.asarray(pairs[:, 1])[real], ref[real], rtol=1e-4, atol=1e-4)


def test_reward_apply_fn_scores_both_responses():
  model = gpt2.create(num_classes=1, size='tiny', vocab_size=VOCAB, num_layers=1, d_model=16,
                      num_heads=2, mlp_dim=32, max_len=16, dropout=0.0)
  batch = _pair_batch()
  params = model.init(jax.random.key(0), {k: batch[k][:, 0] for k in
                                          ('input_ids', 'attention_mask')})['params']
  params['head']['kernel'] = jax.random.normal(jax.random.key(1), params['head']['kernel'].shape)
  r = sequence.reward_apply_fn(model)(params, batch, train=False, rng=None)
  assert r.shape == (3, 2) and r.dtype == jnp.float32
  for k in range(2):
    one = model.apply({'params': params}, {'input_ids': batch['input_ids'][:, k],
                                           'attention_mask': batch['attention_mask'][:, k]})
    np.testing.assert_allclose(r[:, k], one[:, 0], rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(r[:, 0] - r[:, 1])).min() > 1e-4
  two = gpt2.create(num_classes=2, size='tiny', vocab_size=VOCAB, num_layers=1, d_model=16,
                    num_heads=2, mlp_dim=32, max_len=16)
  p2 = two.init(jax.random.key(0), {k: batch[k][:, 0] for k in
                                    ('input_ids', 'attention_mask')})['params']
  with pytest.raises(UserError, match='num_classes=1'):
    sequence.reward_apply_fn(two)(p2, batch, train=False, rng=None)
