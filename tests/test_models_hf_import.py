"""Hugging Face import: our Flax GPT-2 / BERT / Llama / Qwen2 == transformers on the same weights.

Tiny random transformers models (every weight perturbed, so biases and norms are not trivially 0
or 1) are saved with save_pretrained and imported with each family's load_pretrained; hidden
states and LM logits must agree within 1e-4 in fp32 on right-padded batches (real tokens only).
"""
import numpy as np
import pytest

transformers = pytest.importorskip('transformers')
torch = pytest.importorskip('torch')

import jax  # noqa: E402

from w2s import registry  # noqa: E402
from w2s.errors import UserError  # noqa: E402
from w2s.models import bert, gpt2, hf_import, llama  # noqa: E402

VOCAB = 100
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)


def _batch():
  rs = np.random.RandomState(0)
  ids = rs.randint(0, VOCAB, (3, 11)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 7:] = 0
  mask[2, 2:] = 0
  ids[mask == 0] = 0  # what a pipeline pads with; never read
  return {'input_ids': ids, 'attention_mask': mask}


def _save(hf_model, path, **kw):
  torch.manual_seed(1)
  with torch.no_grad():
    for p in hf_model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  hf_model.eval().save_pretrained(path, **kw)
  return hf_model


def _reference(hf_model, batch):
  extra = {}
  if 'token_type_ids' in batch:
    extra['token_type_ids'] = torch.tensor(batch['token_type_ids'], dtype=torch.long)
  with torch.no_grad():
    out = hf_model(input_ids=torch.tensor(batch['input_ids'], dtype=torch.long),
                   attention_mask=torch.tensor(batch['attention_mask']), output_hidden_states=True,
                   **extra)
  hidden = out.last_hidden_state if hasattr(out, 'last_hidden_state') else out.hidden_states[-1]
  logits = out.logits.numpy() if hasattr(out, 'logits') else None
  return hidden.numpy(), logits


def _compare(family, path, hf_model, lm_head=False, pairs=False):
  batch = _batch()
  if pairs:  # sentence pairs: the second segment of each real sequence has token type 1
    batch['token_type_ids'] = (np.arange(11)[None] >= batch['attention_mask'].sum(1)[:, None] // 2
                               ).astype(np.int32) * batch['attention_mask']
  model = registry.build('models', dict(name=family, pretrained=str(path), lm_head=lm_head),
                         num_classes=3)
  params = hf_import.init_params(model, jax.random.key(0), batch)
  ref_hidden, ref_logits = _reference(hf_model, batch)
  hidden, _ = model.apply({'params': params}, batch['input_ids'], batch['attention_mask'],
                          batch.get('token_type_ids'),
                          method=lambda m, i, k, tt: m.backbone(i, k, token_type_ids=tt))
  real = batch['attention_mask'].astype(bool)
  np.testing.assert_allclose(np.asarray(hidden)[real], ref_hidden[real], atol=1e-4, rtol=1e-4)
  if ref_logits is not None:
    logits, _ = model.apply({'params': params}, batch['input_ids'], batch['attention_mask'],
                            method='lm')
    np.testing.assert_allclose(np.asarray(logits)[real], ref_logits[real], atol=1e-4, rtol=1e-4)
  # the head is zero-initialised and not in the checkpoint
  np.testing.assert_array_equal(params['head']['kernel'], 0)
  np.testing.assert_array_equal(model.apply({'params': params}, batch), 0)
  return model, params


def test_gpt2_matches_transformers(tmp_path):
  cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
  hf_model = _save(transformers.GPT2LMHeadModel(cfg), tmp_path)
  _compare('gpt2', tmp_path, hf_model)


def test_bert_matches_transformers(tmp_path):
  cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=32)
  hf_model = _save(transformers.BertModel(cfg), tmp_path)
  _compare('bert', tmp_path, hf_model)
  _compare('bert', tmp_path, hf_model, pairs=True)


@pytest.mark.parametrize('tied', [True, False])
def test_llama_matches_transformers(tmp_path, tied):
  cfg = transformers.LlamaConfig(**SMALL, tie_word_embeddings=tied, rope_theta=500000.0)
  hf_model = _save(transformers.LlamaForCausalLM(cfg), tmp_path)
  model, params = _compare('llama', tmp_path, hf_model, lm_head=True)
  assert ('unembed' in params['backbone']) == (not tied)


def test_llama3_rope_scaling_matches_transformers(tmp_path):
  rope = dict(rope_type='llama3', factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16)  # short, so the smoothed band is exercised
  cfg = transformers.LlamaConfig(**SMALL, rope_scaling=rope, rope_theta=500000.0)
  hf_model = _save(transformers.LlamaForCausalLM(cfg), tmp_path)
  model, _ = _compare('llama', tmp_path, hf_model, lm_head=True)
  assert model.backbone.config.rope_scaling is not None


def test_qwen2_matches_transformers(tmp_path):
  cfg = transformers.Qwen2Config(**SMALL, tie_word_embeddings=True)
  hf_model = _save(transformers.Qwen2ForCausalLM(cfg), tmp_path)
  model, params = _compare('llama', tmp_path, hf_model)
  assert model.backbone.config.qkv_bias
  assert np.abs(params['backbone']['layers_0']['self_attn']['q']['bias']).max() > 0


def test_sharded_bfloat16_checkpoint(tmp_path):
  cfg = transformers.Qwen2Config(**SMALL, tie_word_embeddings=True)
  hf_model = _save(transformers.Qwen2ForCausalLM(cfg), tmp_path / 'fp32')
  hf_model.to(torch.bfloat16).save_pretrained(tmp_path / 'bf16', max_shard_size='20KB')
  assert (tmp_path / 'bf16' / hf_import.INDEX_FILE).exists()
  _, ref = llama.load_pretrained(str(tmp_path / 'fp32'))
  _, got = llama.load_pretrained(str(tmp_path / 'bf16'))
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, rtol=1e-2, atol=1e-2)  # bf16 rounding only


def test_mismatched_checkpoints_name_the_first_bad_tensor(tmp_path):
  cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
  _save(transformers.GPT2LMHeadModel(cfg), tmp_path)
  batch = _batch()
  cases = [(dict(size='tiny'), "'transformer.wte.weight' has shape (100, 32)"),  # width 64 preset
           (dict(num_layers=3), "'transformer.h.2."),  # a layer the checkpoint lacks
           (dict(num_layers=1), "'transformer.h.1.")]  # a layer the config lacks
  for hparams, message in cases:
    model = gpt2.create(num_classes=2, pretrained=str(tmp_path), **hparams)
    with pytest.raises(UserError, match=message.replace('(', r'\(').replace(')', r'\)')):
      hf_import.init_params(model, jax.random.key(0), batch)
  with pytest.raises(UserError, match='not a directory'):
    bert.create(num_classes=2, pretrained=str(tmp_path / 'nope'))
