"""GPT-NeoX / Pythia (`gpt_neox`) and Mistral (`llama` with a sliding window) == transformers.

Tiny random transformers models (every weight perturbed, so biases and norms are not trivially 0
or 1) are saved with save_pretrained (safetensors) and imported by w2s: LM logits and last hidden
states on a right-padded batch agree within rtol = atol = 1e-4 in float32, greedy decoding with the
KV cache gives transformers' `generate` tokens, and a Mistral window shorter than the sequence
matches transformers' eager attention. The families also run where the other decoders do: the
classifier (zero head, padding-invariant features), LoRA, the Megatron tensor-parallel rules under
FSDP, and the Pythia / Mistral presets have the published parameter counts.
"""
import functools
import json

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

import test_models_hf_import as hf_import_tests
from test_models_families import _text_batch
from w2s import registry, sharding, train
from w2s.errors import UserError
from w2s.models import decoding, gpt_neox, hf_import, llama, lora

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

VOCAB = 100
NEOX = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=64)
MISTRAL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2)
WINDOW = 4  # < the 11-token batch and the prompts + new tokens of decoding


def _batch():
  """(ids, mask) [3, 11] with two padded rows: the batch of the gpt2 / llama import tests."""
  b = hf_import_tests._batch()
  return b['input_ids'], b['attention_mask']


def _save(hf_model, path):
  torch.manual_seed(1)
  with torch.no_grad():
    for p in hf_model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  hf_model.eval().save_pretrained(str(path))
  return hf_model


def _neox(path, **kw):
  return _save(transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**NEOX, **kw)), path)


def _mistral(path, window=WINDOW):
  cfg = transformers.MistralConfig(**MISTRAL, sliding_window=window)
  cfg._attn_implementation = 'eager'
  return _save(transformers.MistralForCausalLM(cfg), path)


def _load(family, path, **kw):
  ids, mask = _batch()
  model = registry.build('models', dict(name=family, pretrained=str(path), lm_head=True, **kw),
                         num_classes=3)
  params = hf_import.init_params(model, jax.random.key(0), {'input_ids': ids,
                                                             'attention_mask': mask})
  return model, params


def _ours(model, params):
  ids, mask = _batch()
  hidden, _ = model.apply({'params': params}, ids, mask, method=lambda m, i, k: m.backbone(i, k))
  logits, _ = model.apply({'params': params}, ids, mask, method='lm')
  return np.asarray(hidden), np.asarray(logits)


def _theirs(hf_model):
  ids, mask = _batch()
  with torch.no_grad():
    out = hf_model(input_ids=torch.tensor(ids, dtype=torch.long),
                   attention_mask=torch.tensor(mask), output_hidden_states=True)
  return out.hidden_states[-1].numpy(), out.logits.numpy()


def _assert_parity(model, params, hf_model):
  real = _batch()[1].astype(bool)
  for ours, theirs in zip(_ours(model, params), _theirs(hf_model)):
    np.testing.assert_allclose(ours[real], theirs[real], rtol=1e-4, atol=1e-4)
    assert np.abs(theirs[real]).max() > 0.1  # a comparison of something, not of zeros
  np.testing.assert_array_equal(params['head']['kernel'], 0)  # not in the checkpoint


@pytest.mark.parametrize('parallel,tied', [(True, False), (False, True)],
                         ids=['parallel', 'sequential-tied'])
def test_gpt_neox_matches_transformers(tmp_path, parallel, tied):
  hf_model = _neox(tmp_path, use_parallel_residual=parallel, rotary_pct=0.5,
                   tie_word_embeddings=tied)
  model, params = _load('gpt_neox', tmp_path)
  c = model.backbone.config
  assert (c.parallel_residual, c.rotary_dim, c.dh, c.tie_embeddings) == (parallel, 4, 8, tied)
  assert ('unembed' in params['backbone']) == (not tied)  # Pythia's separate embed_out
  _assert_parity(model, params, hf_model)


def test_gpt_neox_reads_transformers_4_config_files(tmp_path):
  """Pythia's config.json on the hub predates `rope_parameters`: rotary_pct / rotary_emb_base."""
  hf_model = _neox(tmp_path, rotary_pct=0.25, rotary_emb_base=500.0)
  file = tmp_path / 'config.json'
  cfg = json.loads(file.read_text())
  rope = cfg.pop('rope_parameters')
  cfg.update(rotary_pct=rope['partial_rotary_factor'], rotary_emb_base=rope['rope_theta'])
  file.write_text(json.dumps(cfg))
  model, params = _load('gpt_neox', tmp_path)
  assert (model.backbone.config.rotary_pct, model.backbone.config.rope_theta) == (0.25, 500.0)
  _assert_parity(model, params, hf_model)


def test_mistral_sliding_window_matches_transformers(tmp_path):
  hf_model = _mistral(tmp_path)
  model, params = _load('llama', tmp_path)
  assert model.backbone.config.sliding_window == WINDOW
  _assert_parity(model, params, hf_model)
  # the window matters (tokens beyond it differ from full attention), and a window no shorter
  # than the sequence is plain Llama, bit for bit
  real = _batch()[1].astype(bool)
  _, windowed = _ours(model, params)
  full = lambda w: _ours(_load('llama', tmp_path, sliding_window=w)[0], params)[1]
  np.testing.assert_allclose(full(11), full(None), rtol=1e-6, atol=1e-7)
  assert np.abs(full(None)[real] - windowed[real]).max() > 1e-2
  np.testing.assert_allclose(full(None)[:, :WINDOW], windowed[:, :WINDOW], rtol=1e-6, atol=1e-7)


def test_mistral_without_a_window_matches_transformers(tmp_path):
  hf_model = _mistral(tmp_path, window=None)
  model, params = _load('llama', tmp_path)
  assert model.backbone.config.sliding_window is None
  _assert_parity(model, params, hf_model)


@pytest.mark.parametrize('family', ['gpt_neox', 'mistral'])
def test_greedy_decoding_with_the_cache_matches_generate(tmp_path, family):
  """The padded batch decoded at once (left-aligned prompts, KV cache) == transformers' generate
  on each unpadded prompt; Mistral's window (4) is shorter than prompt + new tokens."""
  hf_model = _neox(tmp_path, rotary_pct=0.5) if family == 'gpt_neox' else _mistral(tmp_path)
  model, params = _load('gpt_neox' if family == 'gpt_neox' else 'llama', tmp_path)
  ids, mask = _batch()
  n, eos = 6, hf_model.config.eos_token_id
  ours = decoding.generate(model, params, ids, mask, max_new_tokens=n, eos_id=eos)
  new = 0
  for row in range(len(ids)):
    length = int(mask[row].sum())
    ref = hf_model.generate(torch.tensor(ids[row:row + 1, :length], dtype=torch.long),
                            attention_mask=torch.ones(1, length, dtype=torch.long),
                            max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=eos)
    kept = np.asarray(ours['mask'][row]).astype(bool)  # up to and with eos, as generate stops
    assert np.asarray(ours['tokens'][row])[kept].tolist() == ref[0, length:].tolist(), row
    new += int(kept.sum())
  assert new >= 2 * n  # most rows decode past the window (4) before any eos


def test_a_checkpoint_given_to_another_family_names_the_right_one(tmp_path):
  _neox(tmp_path / 'neox')
  with pytest.raises(UserError, match=r"gpt_neox checkpoint.*name='gpt_neox'") as e:
    registry.build('models', dict(name='llama', pretrained=str(tmp_path / 'neox')), num_classes=2)
  assert '\n' not in str(e.value)
  _mistral(tmp_path / 'mistral')
  with pytest.raises(UserError, match=r"mistral checkpoint.*name='llama'"):
    registry.build('models', dict(name='gpt_neox', pretrained=str(tmp_path / 'mistral')),
                   num_classes=2)


TINY = [dict(name='gpt_neox', size='tiny'), dict(name='llama', size='mistral-tiny')]




@functools.lru_cache(maxsize=None)
def _features(model):
  return jax.jit(lambda p, b: model.apply({'params': p}, b, method='features'))


def _init(spec):
  model = registry.build('models', spec, num_classes=3)
  return model, hf_import.init_params(model, jax.random.key(0), _text_batch())


def _feats(model, params, batch):
  return np.asarray(_features(model)(params, batch))


@pytest.mark.parametrize('spec', TINY, ids=lambda s: s['size'])
def test_classifier_head_and_padding_invariant_features(spec):
  """A zero head (Burns et al., 2023); features that ignore padding, whatever its id, and equal
  the row alone (Mistral-tiny's window of 8 is shorter than the 16-token rows)."""
  model, params = _init(spec)
  batch = _text_batch()
  np.testing.assert_array_equal(jax.jit(model.apply)({'params': params}, batch), 0)
  base = _feats(model, params, batch)
  np.testing.assert_allclose(_feats(model, params, _text_batch(pad_id=257)), base, rtol=1e-5,
                             atol=1e-6)
  alone = {k: v[2:3, :3] for k, v in batch.items()}  # row 2 has 3 real tokens
  np.testing.assert_allclose(_feats(model, params, alone)[0], base[2], rtol=1e-5, atol=1e-6)


def test_lora_adapts_the_fused_attention_and_the_mlp():
  """Adapters on GPT-NeoX's q/k/v/o (split from query_key_value) and dense_h_to_4h /
  dense_4h_to_h; a fresh adapter is the base model, `lora.merge` folds a trained one back in.
  (Mistral's layers are Llama's: tests/test_models_lora.py.)"""
  spec = TINY[0]
  model, params = _init(spec)
  batch = _text_batch()
  base = _feats(model, params, batch)
  adapted, lp = _init(dict(spec, lora=dict(rank=2)))
  layer = lp['backbone']['layers_0']
  mlp = ('dense_h_to_4h', 'dense_4h_to_h')
  assert all('lora_a' in layer['attention'][n] for n in 'qkvo')
  assert all('lora_a' in layer[n] for n in mlp)
  flat = lambda t: dict(jax.tree_util.tree_leaves_with_path(t))
  assert len([k for k in flat(lp) if not lora.is_adapter(k)]) == len(flat(params))
  np.testing.assert_allclose(_feats(adapted, lp, batch), base, rtol=1e-5, atol=1e-6)
  trained = jax.tree.map(lambda x: x, lp)
  layer = trained['backbone']['layers_0']
  layer[mlp[0]]['lora_b'] = np.full_like(layer[mlp[0]]['lora_b'], 0.05)
  moved = _feats(adapted, trained, batch)
  assert np.abs(moved - base).max() > 1e-3
  np.testing.assert_allclose(moved, _feats(model, lora.merge(trained, dict(rank=2)), batch),
                             rtol=1e-4, atol=1e-5)


def _examples(n=64, t=12):
  from w2s.data import pipeline
  rs = np.random.RandomState(0)
  label = rs.randint(0, 2, n)
  ids = (rs.randint(1, 256, (n, t)) + 256 * label[:, None]).astype(np.int32)
  mask = (np.arange(t)[None] < rs.randint(3, t + 1, n)[:, None]).astype(np.int32)
  ids[mask == 0] = 0
  return pipeline.one_hot_labels({'id': np.arange(n), 'label': label, 'input_ids': ids,
                                  'attention_mask': mask}, 2)


def test_fsdp_and_tensor_parallel_rules_equal_one_device(tmp_path):
  """partition='fsdp+tp' on a (data 2, fsdp 2, tensor 2) mesh: q/k/v and MLP-up split by column,
  attention-out and MLP-down by row (GPT-NeoX's dense_h_to_4h / dense_4h_to_h; Mistral's layers
  are Llama's, covered by tests/test_partition.py); two SGD steps equal the single-device ones."""
  spec = TINY[0]
  P = jax.sharding.PartitionSpec
  cfg = lambda part: ConfigDict(dict(
      seed=0, loss=dict(name='xent'), optimizer=dict(name='sgd', learning_rate=0.5),
      schedule=dict(name='constant'), batch_size=16, num_steps=2, log_every=1,
      checkpoint_every=1000, keep_checkpoints=1, partition=part))
  module = registry.build('models', spec, num_classes=2)
  examples = _examples()
  ref, _ = train.fit(module, examples, cfg=cfg('replicate'), mesh=sharding.make_mesh(1),
                     workdir=str(tmp_path / 'one'))
  mesh = sharding.make_mesh(shape=dict(data=2, fsdp=2, tensor=2))
  state, _ = train.fit(module, examples, cfg=cfg(dict(rules='fsdp+tp', min_bytes=0)), mesh=mesh,
                       workdir=str(tmp_path / 'tp'))
  layer = state.params['backbone']['layers_0']
  attn = layer['attention' if spec['name'] == 'gpt_neox' else 'self_attn']
  up, down = (('dense_h_to_4h', 'dense_4h_to_h') if spec['name'] == 'gpt_neox'
              else ('up_proj', 'down_proj'))
  assert attn['q']['kernel'].sharding.spec == P('fsdp', 'tensor')
  assert attn['o']['kernel'].sharding.spec == P('tensor', 'fsdp')
  assert layer[up]['kernel'].sharding.spec == P('fsdp', 'tensor')
  assert layer[down]['kernel'].sharding.spec == P('tensor', 'fsdp')
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                                       atol=1e-6), state.params, ref.params)


def _count(family, size):
  model = registry.build('models', dict(name=family, size=size), num_classes=2)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), _text_batch()))
  return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes['params']['backbone']))


@functools.lru_cache(maxsize=None)
def _hf_count(cls_name, **kw):
  cfg = getattr(transformers, cls_name + 'Config')(**kw)
  with torch.device('meta'):  # shapes only, nothing allocated
    hf_model = getattr(transformers, cls_name + 'Model')(cfg)
  return sum(p.numel() for p in hf_model.parameters())


def test_presets_have_the_published_sizes():
  """The presets' backbones (shapes only) == transformers' bare models of the same configs."""
  assert _count('gpt_neox', 'pythia-70m') == 44_670_976 == _hf_count(
      'GPTNeoX', vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
      intermediate_size=2048)  # + embed_out 25,755,648 = Pythia-70M's 70,426,624
  assert _count('gpt_neox', 'pythia-410m') == _hf_count(
      'GPTNeoX', vocab_size=50304, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
      intermediate_size=4096)
  assert _count('llama', 'mistral-7b') == _hf_count('Mistral')  # MistralConfig() is Mistral 7B
