"""Hugging Face import: our Flax GPT-2 / BERT / Llama / Qwen2 == transformers on the same weights.

Tiny random transformers models (every weight perturbed, so biases and norms are not trivially 0
or 1) are saved with save_pretrained and imported with each family's load_pretrained; hidden
states and LM logits must agree within 1e-4 in fp32 on right-padded batches (real tokens only).
Damaged copies of the embedded MiniLM checkpoint (no transformers needed) must fail with one
UserError line naming the bad file.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest

try:
  import torch
  import transformers
except ImportError:
  torch = transformers = None

import jax  # noqa: E402

from w2s import registry  # noqa: E402
from w2s.errors import UserError  # noqa: E402
from w2s.models import bert, gpt2, hf_import, llama  # noqa: E402

needs_transformers = pytest.mark.skipif(transformers is None,
                                        reason='needs transformers and torch (pip install .[test])')
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


@needs_transformers
def test_gpt2_matches_transformers(tmp_path):
  cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4)
  hf_model = _save(transformers.GPT2LMHeadModel(cfg), tmp_path)
  _compare('gpt2', tmp_path, hf_model)


@needs_transformers
def test_bert_matches_transformers(tmp_path):
  cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=32)
  hf_model = _save(transformers.BertModel(cfg), tmp_path)
  _compare('bert', tmp_path, hf_model)
  _compare('bert', tmp_path, hf_model, pairs=True)


@needs_transformers
@pytest.mark.parametrize('tied', [True, False])
def test_llama_matches_transformers(tmp_path, tied):
  cfg = transformers.LlamaConfig(**SMALL, tie_word_embeddings=tied, rope_theta=500000.0)
  hf_model = _save(transformers.LlamaForCausalLM(cfg), tmp_path)
  model, params = _compare('llama', tmp_path, hf_model, lm_head=True)
  assert ('unembed' in params['backbone']) == (not tied)


@needs_transformers
def test_llama3_rope_scaling_matches_transformers(tmp_path):
  rope = dict(rope_type='llama3', factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=16)  # short, so the smoothed band is exercised
  cfg = transformers.LlamaConfig(**SMALL, rope_scaling=rope, rope_theta=500000.0)
  hf_model = _save(transformers.LlamaForCausalLM(cfg), tmp_path)
  model, _ = _compare('llama', tmp_path, hf_model, lm_head=True)
  assert model.backbone.config.rope_scaling is not None


@needs_transformers
def test_qwen2_matches_transformers(tmp_path):
  cfg = transformers.Qwen2Config(**SMALL, tie_word_embeddings=True)
  hf_model = _save(transformers.Qwen2ForCausalLM(cfg), tmp_path)
  model, params = _compare('llama', tmp_path, hf_model)
  assert model.backbone.config.qkv_bias
  assert np.abs(params['backbone']['layers_0']['self_attn']['q']['bias']).max() > 0


@needs_transformers
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


@needs_transformers
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


SHARDS = ('model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors')


def _cut(file, fraction=0.5):
  with open(file, 'rb') as f:
    data = f.read()
  with open(file, 'wb') as f:
    f.write(data[:int(len(data) * fraction)])


def _damaged(tmp_path, case):
  """A copy of the embedded MiniLM directory (weights symlinked) with one defect; -> (dir, file)."""
  from safetensors import safe_open
  from safetensors.numpy import save_file
  real = hf_import.resolve('minilm')
  d = tmp_path / case
  d.mkdir()
  for name in ('config.json', 'tokenizer.json'):
    shutil.copyfile(os.path.join(real, name), d / name)
  config = json.loads((d / 'config.json').read_text())
  if case.startswith('index'):  # shard 1 is the real file, shard 2 holds one extra tensor
    os.symlink(os.path.join(real, hf_import.SINGLE_FILE), d / SHARDS[0])
    save_file({'extra.weight': np.ones((64, 64), np.float32)}, str(d / SHARDS[1]))
    with safe_open(os.path.join(real, hf_import.SINGLE_FILE), framework='numpy') as f:
      names = list(f.keys())
    weight_map = {**{n: SHARDS[0] for n in names}, 'extra.weight': SHARDS[1]}
    (d / hf_import.INDEX_FILE).write_text(json.dumps({'weight_map': weight_map}))
  elif case == 'truncated_weights':  # the first half of the real file
    with open(os.path.join(real, hf_import.SINGLE_FILE), 'rb') as f:
      (d / hf_import.SINGLE_FILE).write_bytes(f.read(os.path.getsize(f.name) // 2))
    return d, hf_import.SINGLE_FILE
  else:
    os.symlink(os.path.join(real, hf_import.SINGLE_FILE), d / hf_import.SINGLE_FILE)
  if case == 'truncated_config':
    _cut(d / 'config.json')
  elif case == 'config_missing_key':
    del config['hidden_size']
    (d / 'config.json').write_text(json.dumps(config))
  elif case == 'config_not_object':
    (d / 'config.json').write_text(json.dumps([config]))
  elif case == 'index_missing_shard':
    os.remove(d / SHARDS[1])
    return d, SHARDS[1]
  elif case == 'index_truncated_shard':
    _cut(d / SHARDS[1])
    return d, SHARDS[1]
  elif case == 'index_tensor_not_in_shard':
    save_file({'other.weight': np.ones((64, 64), np.float32)}, str(d / SHARDS[1]))
    return d, SHARDS[1]
  elif case == 'index_invalid_json':
    _cut(d / hf_import.INDEX_FILE, 0.3)
    return d, hf_import.INDEX_FILE
  elif case == 'index_no_weight_map':
    (d / hf_import.INDEX_FILE).write_text(json.dumps({'metadata': {}}))
    return d, hf_import.INDEX_FILE
  return d, 'config.json'


@pytest.mark.parametrize('case,message', [
    ('truncated_weights', 'is not a readable safetensors file .*truncated'),
    ('truncated_config', 'is not valid JSON'),
    ('config_missing_key', "has no 'hidden_size'"),
    ('config_not_object', 'not an object'),
    ('index_missing_shard', r'is missing \(named by .*model.safetensors.index.json\)'),
    ('index_truncated_shard', 'is not a readable safetensors file .*truncated'),
    ('index_tensor_not_in_shard', "lacks tensor 'extra.weight'"),
    ('index_invalid_json', 'is not valid JSON'),
    ('index_no_weight_map', 'no "weight_map"'),
])
def test_damaged_checkpoint_is_one_user_error_naming_the_file(tmp_path, case, message):
  d, bad = _damaged(tmp_path, case)
  batch = {'input_ids': np.ones((1, 4), np.int32), 'attention_mask': np.ones((1, 4), np.int32)}
  with pytest.raises(UserError) as e:  # at create (config.json) or at load (weights)
    model = registry.build('models', dict(name='bert', pretrained=str(d)), num_classes=2)
    hf_import.init_params(model, jax.random.key(0), batch)
  text = str(e.value)
  assert str(d / bad) in text and 'download the checkpoint again' in text, text
  assert '\n' not in text and re.search(message, text), text


def test_undamaged_copy_loads_and_fingerprints(tmp_path):
  """The control for the damaged copies: the same copy, sharded, loads all MiniLM tensors."""
  d, _ = _damaged(tmp_path, 'index_ok')
  os.remove(d / SHARDS[1])
  index = json.loads((d / hf_import.INDEX_FILE).read_text())
  del index['weight_map']['extra.weight']
  (d / hf_import.INDEX_FILE).write_text(json.dumps(index))
  _, params = bert.load_pretrained(str(d))
  _, ref = bert.load_pretrained('minilm')
  jax.tree.map(np.testing.assert_array_equal, params, ref)
  assert set(hf_import.fingerprint(str(d))['files']) == {'config.json', 'tokenizer.json',
                                                        SHARDS[0], hf_import.INDEX_FILE}
  assert list(hf_import.fingerprint(str(d / 'tokenizer.json'))['files']) == ['tokenizer.json']
  with pytest.raises(UserError, match='neither a directory nor a file'):
    hf_import.fingerprint(str(d / 'nope'))
