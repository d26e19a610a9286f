"""Checkpoints read straight into their shards; bf16 params with float32 master weights.

Sharded import: every tensor of a multi-file checkpoint goes from its safetensors file into its
device shards (`hf_import.init_params(targets=...)`, what `fit` does), equals transformers on
every mesh, and never holds the whole model on the host (measured). Master weights: small
updates that bf16 alone would round away accumulate in the float32 copy.
"""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from w2s import optim, partition, registry, sharding, train
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.models import hf_import

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))
import import_memory  # noqa: E402  benchmarks/import_memory.py

try:
  import torch
  import transformers
except ImportError:  # pragma: no cover
  torch = transformers = None

MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]
VOCAB = 96


def _batch():
  rs = np.random.RandomState(0)
  ids = rs.randint(0, VOCAB, (4, 9)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  return {'input_ids': ids * mask, 'attention_mask': mask}


def _targets(model, batch, mesh, rules):
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
  abstract = jax.eval_shape(lambda: model.init(rngs, batch, train=False))['params']
  shards = partition.shardings(abstract, mesh, rules, model.partition_rules)
  return partition.with_shardings(abstract, shards)


def _hf_checkpoint(family, path):
  torch.manual_seed(0)
  if family == 'gpt2':
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    hf = transformers.GPT2LMHeadModel(cfg)
  else:
    cfg = transformers.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, tie_word_embeddings=False)
    hf = transformers.Qwen2ForCausalLM(cfg)
  with torch.no_grad():
    for p in hf.parameters():
      p.add_(0.1 * torch.randn_like(p))
  hf.eval().save_pretrained(path, max_shard_size='40KB')  # several files + an index
  assert os.path.exists(os.path.join(path, hf_import.INDEX_FILE))
  return hf


@pytest.mark.skipif(transformers is None, reason='needs transformers and torch (pip install .[test])')
@pytest.mark.parametrize('family', ['gpt2', 'llama'])
def test_sharded_import_matches_transformers_on_every_mesh(tmp_path, family):
  hf = _hf_checkpoint(family, str(tmp_path))
  batch = _batch()
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(batch['input_ids'], dtype=torch.long),
             attention_mask=torch.tensor(batch['attention_mask'])).logits.numpy()
  model = registry.build('models', dict(name=family, pretrained=str(tmp_path), lm_head=True),
                         num_classes=3)
  real = batch['attention_mask'].astype(bool)
  for shape in MESHES:
    mesh = sharding.make_mesh(0, dict(data=shape[0], fsdp=1, tensor=shape[1]) if shape[1] < 8
                              else dict(data=1, fsdp=4, tensor=2))
    targets = _targets(model, batch, mesh, dict(rules='fsdp+tp', min_bytes=0))
    params = hf_import.init_params(model, jax.random.key(0), batch, targets=targets)
    split = 0
    for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(targets)):
      assert p.sharding.is_equivalent_to(t.sharding, p.ndim), (shape, p.sharding, t.sharding)
      split += p.addressable_shards[0].data.shape != p.shape
    assert split > 0 or shape == (8, 1)  # tensor/fsdp axes of size > 1 really split tensors
    logits, _ = jax.jit(lambda p, b: model.apply({'params': p}, b['input_ids'],
                                                 b['attention_mask'], method='lm'))(params, batch)
    np.testing.assert_allclose(np.asarray(logits)[real], ref[real], rtol=1e-4, atol=1e-4,
                               err_msg=f'mesh {shape}')


def test_sharded_import_holds_about_one_tensor_on_the_host():
  """Peak host memory above the baseline (minus the device arrays, which a CPU backend keeps in
  host memory too) stays under 2x the largest file; the whole-model path needs the checkpoint."""
  out = import_memory.main(['--hidden', '256', '--layers', '2', '--vocab', '8192',
                            '--shard_mb', '2'])
  assert out['sharded']['extra'] < 2 * out['largest_file'], out
  assert out['whole']['extra'] > 0.5 * out['total'] > out['sharded']['extra'], out


def _tiny_llama(path):
  import_memory.write_llama(str(path), hidden=64, layers=2, vocab=128, shard_mb=0.02)
  return registry.build('models', dict(name='llama', pretrained=str(path)), num_classes=2)


def test_check_only_reads_headers_and_names_a_bad_config(tmp_path):
  model = _tiny_llama(tmp_path)
  shapes = hf_import.pretrained_params(model, place=hf_import.check_only)
  full = hf_import.pretrained_params(model)
  assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(lambda a: a.shape, full)
  wrong = registry.build('models', dict(name='llama', size='qwen2-tiny', pretrained=str(tmp_path)),
                         num_classes=2)
  with pytest.raises(UserError, match='has shape'):
    hf_import.pretrained_params(wrong, place=hf_import.check_only)


def test_fit_reads_the_checkpoint_into_fsdp_shards(tmp_path):
  """A pretrained model in `fit` starts from its checkpoint (sharded), not from a random init."""
  model = _tiny_llama(tmp_path / 'ckpt')
  rs = np.random.RandomState(0)
  ids = rs.randint(1, 128, (32, 8)).astype(np.int32)
  examples = {'id': np.arange(32), 'input_ids': ids, 'attention_mask': np.ones_like(ids),
              'label': np.eye(2, dtype=np.float32)[ids[:, 0] % 2]}
  cfg = dict(loss=dict(name='xent'), optimizer=dict(name='sgd', learning_rate=1e-9),
             batch_size=8, num_steps=1, partition=dict(rules='fsdp', min_bytes=0))
  mesh = sharding.make_mesh(0, dict(data=2, fsdp=4))
  state, _ = train.fit(model, examples, cfg=cfg, workdir=str(tmp_path / 'run'), mesh=mesh)
  want = hf_import.pretrained_params(model)['backbone']
  emb = state.params['backbone']['embed_tokens']['embedding']
  np.testing.assert_allclose(np.asarray(emb), want['embed_tokens']['embedding'], rtol=1e-6,
                             atol=1e-7)
  assert emb.addressable_shards[0].data.shape[1] == emb.shape[1] // 4 or \
      emb.addressable_shards[0].data.shape[0] == emb.shape[0] // 4
  # the head starts at zero (first loss ln 2) and one step at lr 1e-9 barely moves it
  assert np.abs(np.asarray(state.params['head']['kernel'])).max() < 1e-9


def test_master_weights_keep_updates_bf16_would_round_away():
  """SGD lr 1e-3 with gradient 1 on a bf16 param of 1.0: in bf16 alone 1 - 1e-3 rounds back to
  1 (bf16's spacing at 1 is 2^-7), so the param never moves; with float32 master weights it
  reaches 1 - 100 * 1e-3 = 0.9 after 100 steps, rounded to bf16 once."""
  params = {'w': jnp.ones((3,), jnp.bfloat16)}
  grads = {'w': jnp.ones((3,), jnp.bfloat16)}
  plain, master = optax.sgd(1e-3), optim.with_master_weights(optax.sgd(1e-3))
  p_plain, s_plain = params, plain.init(params)
  p_master, s_master = params, master.init(params)
  for _ in range(100):
    u, s_plain = plain.update(grads, s_plain, p_plain)
    p_plain = optax.apply_updates(p_plain, u)
    u, s_master = master.update(grads, s_master, p_master)
    p_master = optax.apply_updates(p_master, u)
  np.testing.assert_array_equal(np.asarray(p_plain['w'], np.float32), 1.0)
  exact = np.float32(1.0)
  for _ in range(100):
    exact = np.float32(exact - np.float32(1e-3))
  np.testing.assert_allclose(np.asarray(s_master.master['w']), exact, rtol=1e-6)
  assert p_master['w'].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(p_master['w']),
                                np.asarray(jnp.asarray(exact).astype(jnp.bfloat16)))


def test_master_weights_skip_frozen_leaves():
  trainable = {'a': True, 'b': False}
  tx = optax.multi_transform({'t': optax.adam(1e-2), 'f': optax.set_to_zero()},
                             {'a': 't', 'b': 'f'})
  tx = optim.with_master_weights(tx, trainable)
  params = {'a': jnp.ones((4, 4), jnp.bfloat16), 'b': jnp.ones((4, 4), jnp.bfloat16)}
  state = tx.init(params)
  assert state.master['a'].dtype == jnp.float32 and state.master['b'].shape == ()
  u, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  new = optax.apply_updates(params, u)
  np.testing.assert_array_equal(np.asarray(new['b'], np.float32), 1.0)
  assert np.all(np.asarray(new['a'], np.float32) < 1.0)


def test_fit_with_bf16_params_trains_and_resumes_its_master_weights(tmp_path):
  ds = registry.build('datasets', dict(name='digits'))
  examples = pipeline.one_hot_labels({k: ds.split('train')[k] for k in ('id', 'label', 'x')}, 10)
  model = registry.build('models', dict(name='mlp', hidden=(32,)), num_classes=10)
  cfg = dict(loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=3e-3),
             batch_size=32, num_steps=60, log_every=30, checkpoint_every=30)
  mesh = sharding.make_mesh(1)
  f32, m32 = train.fit(model, examples, cfg=cfg, workdir=str(tmp_path / 'f32'), mesh=mesh)
  bf16, m16 = train.fit(model, examples, cfg={**cfg, 'param_dtype': 'bfloat16'},
                        workdir=str(tmp_path / 'bf16'), mesh=mesh)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(bf16.params))
  assert isinstance(bf16.opt_state, optim.MasterWeightsState)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16.opt_state.master))
  # the bf16 run learns like the float32 one (same data order), up to bf16 rounding
  assert abs(float(m16['loss']) - float(m32['loss'])) < 0.1 * float(m32['loss']) + 0.05
  np.testing.assert_allclose(
      np.asarray(jax.tree.leaves(bf16.params)[0], np.float32),
      np.asarray(jax.tree.leaves(bf16.opt_state.master)[0]), rtol=1e-2, atol=1e-2)
  again, _ = train.fit(model, examples, cfg={**cfg, 'param_dtype': 'bfloat16'},
                       workdir=str(tmp_path / 'bf16'), mesh=mesh)  # finished: restored as is
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               (bf16.params, bf16.opt_state), (again.params, again.opt_state))
  with pytest.raises(UserError, match='param_dtype'):
    train.fit(model, examples, cfg={**cfg, 'param_dtype': 'float16'},
              workdir=str(tmp_path / 'bad'), mesh=mesh)
