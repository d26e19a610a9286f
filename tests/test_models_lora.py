"""LoRA (Hu et al., 2021) on the text families: zero-B identity, layout, masked training, merge."""
import importlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from w2s import registry
from w2s.errors import UserError
from w2s.models import hf_import, lora

FAMILIES = [dict(name='bert', size='tiny'), dict(name='gpt2', size='tiny'),
            dict(name='llama', size='tiny'), dict(name='llama', size='qwen2-tiny')]
LORA = dict(rank=4, alpha=8, targets=('attention', 'mlp'), dropout=0.0)


def _batch():
  rs = np.random.RandomState(0)
  ids = rs.randint(1, 500, (4, 16)).astype(np.int32)
  mask = (np.arange(16)[None] < np.array([[16], [9], [3], [12]])).astype(np.int32)
  ids[mask == 0] = 0
  return {'input_ids': ids, 'attention_mask': mask}


def _build(spec, **kw):
  return registry.build('models', dict(spec, dropout=0.0, **kw), num_classes=3)


def _flat(params):
  return flax.traverse_util.flatten_dict(params)


def _logits(model, params, batch, method=None):
  return jax.jit(lambda p: model.apply({'params': p}, batch, method=method))(params)


def _random_head(params, seed=1):
  head = params['head']['kernel']
  return {**params, 'head': {'kernel': jax.random.normal(jax.random.key(seed), head.shape)}}


@pytest.mark.parametrize('spec', FAMILIES, ids=lambda s: s['size'] + '-' + s['name'])
def test_zero_b_is_the_base_model_and_lora_none_is_unchanged(spec):
  batch = _batch()
  plain, adapted = _build(spec, lora=None), _build(spec, lora=LORA)
  p0 = hf_import.init_params(plain, jax.random.key(0), batch)
  p1 = hf_import.init_params(adapted, jax.random.key(0), batch)
  f0, f1 = _flat(p0), _flat(p1)
  # lora=None: exactly the tree the checkpoint importer fills, plus the head
  family = importlib.import_module(type(plain.backbone).__module__)
  entries = family._entries(plain.backbone.config, *(() if spec['name'] != 'llama' else (False,)))
  assert set(f0) == {('backbone',) + e.flax_path for e in entries} | {('head', 'kernel')}
  # with LoRA: the same base leaves, same init values, plus adapters beside each target kernel
  assert {k for k in f1 if not lora.is_adapter(k)} == set(f0)
  for k in f0:
    np.testing.assert_array_equal(f1[k], f0[k])
  adapters = {k for k in f1 if lora.is_adapter(k)}
  per_layer = 6 if spec['name'] != 'llama' else 7  # q, k, v, o + 2 (3 for SwiGLU) MLP kernels
  assert len(adapters) == 2 * 2 * per_layer
  for k in adapters:
    kernel = f1[k[:-1] + ('kernel',)]
    a_or_b = f1[k]
    assert a_or_b.shape == ((kernel.shape[0], 4) if k[-1] == 'lora_a' else (4, kernel.shape[1]))
    assert (np.all(a_or_b == 0) if k[-1] == 'lora_b' else np.abs(a_or_b).min() > 0)
  # B = 0: bit-identical logits
  p0, p1 = _random_head(p0), _random_head(p1)
  np.testing.assert_array_equal(_logits(adapted, p1, batch), _logits(plain, p0, batch))


def test_bfloat16_adapter_runs_in_bfloat16():
  """dtype='bfloat16': B = 0 still gives the base model's bf16 features bit for bit, and a
  non-zero adapter changes them (so it is applied, in the compute dtype)."""
  batch, spec = _batch(), FAMILIES[2]
  model = _build(spec, lora=LORA, dtype='bfloat16')
  params = hf_import.init_params(model, jax.random.key(0), batch)
  feats = _logits(model, params, batch, 'features')
  np.testing.assert_array_equal(feats, _logits(_build(spec, dtype='bfloat16'), _strip(params),
                                               batch, 'features'))
  jaxpr = jax.make_jaxpr(lambda p: model.apply({'params': p}, batch, method='features'))(params)
  assert 'bf16[4,16,4]' in str(jaxpr)  # x A: [B, T, r] in bfloat16
  moved = _with_random_b(params)
  assert np.abs(_logits(model, moved, batch, 'features') - feats).max() > 1e-2


@pytest.mark.parametrize('targets,adapted', [
    (('attention',), {'q', 'k', 'v', 'o'}),
    (('mlp',), {'gate_proj', 'up_proj', 'down_proj'}),
])
def test_targets_select_the_kernels(targets, adapted):
  model = _build(FAMILIES[2], lora=dict(LORA, targets=targets))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), _batch()))['params']
  got = {k[-2] for k in _flat(shapes) if lora.is_adapter(k)}
  assert got == adapted


def _ce(model, params, batch, labels, rng):
  logits = model.apply({'params': params}, batch, train=True, rngs={'dropout': rng})
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.mark.parametrize('spec', [FAMILIES[1], FAMILIES[3]], ids=lambda s: s['size'])
def test_masked_optimizer_trains_only_adapters_and_head(spec):
  batch, labels = _batch(), jnp.array([0, 1, 2, 1])
  assert _build(spec).trainable_mask({'head': {'kernel': 0}}) is None  # no LoRA: train all
  model = _build(spec, lora=dict(LORA, dropout=0.1), remat=True)
  params = hf_import.init_params(model, jax.random.key(0), batch)
  mask = model.trainable_mask(params)
  assert jax.tree.structure(mask) == jax.tree.structure(params)
  flat_mask = _flat(mask)
  assert all(v == (k[0] == 'head' or k[-1] in ('lora_a', 'lora_b')) for k, v in flat_mask.items())
  labels_tree = jax.tree.map(lambda t: 'train' if t else 'freeze', mask)
  tx = optax.multi_transform({'train': optax.adam(1e-2), 'freeze': optax.set_to_zero()},
                             labels_tree)

  @jax.jit
  def step(p, opt, rng):
    loss, g = jax.value_and_grad(lambda q: _ce(model, q, batch, labels, rng))(p)
    updates, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, updates), opt, loss

  p, opt, losses = params, tx.init(params), []
  for i in range(5):  # head moves at step 1, B at 2, A at 3 (zero head and B pass no gradient)
    p, opt, loss = step(p, opt, jax.random.key(i))
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  before, after = _flat(params), _flat(p)
  for k, trained in flat_mask.items():
    if trained:
      assert np.any(after[k] != before[k]), k
    else:
      np.testing.assert_array_equal(after[k], before[k], err_msg=str(k))


@pytest.mark.parametrize('spec', FAMILIES[:3], ids=lambda s: s['name'])
def test_merged_plain_model_equals_lora_forward(spec):
  batch, cfg = _batch(), dict(LORA, alpha=16)
  model = _build(spec, lora=cfg)
  params = _random_head(hf_import.init_params(model, jax.random.key(0), batch))
  params = _with_random_b(params)
  merged = lora.merge(params, cfg)
  plain = _build(spec)
  shapes = jax.eval_shape(lambda: plain.init(jax.random.key(0), batch))['params']
  assert jax.tree.structure(merged) == jax.tree.structure(shapes)
  out, ref = _logits(plain, merged, batch), _logits(model, params, batch)
  assert np.abs(ref).max() > 0.1  # and the adapters matter:
  assert np.abs(out - _logits(plain, _strip(params), batch)).max() > 1e-3
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def _with_random_b(params):
  """A trained-looking adapter: every B non-zero."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (0.05 * jax.random.normal(jax.random.key(len(str(path))), x.shape)
                       if path[-1].key == 'lora_b' else x), params)


def _strip(params):
  return flax.traverse_util.unflatten_dict(
      {k: v for k, v in _flat(params).items() if not lora.is_adapter(k)})


def test_pretrained_base_with_fresh_adapters():
  """The embedded MiniLM under LoRA: kernels from the checkpoint (train.merge_params over the
  init), adapters fresh, and the same features as the plain pretrained model."""
  from w2s import train
  batch = _batch()
  plain = registry.build('models', dict(name='bert'), num_classes=2)
  adapted = registry.build('models', dict(name='bert', lora=LORA), num_classes=2)
  loaded = hf_import.pretrained_params(adapted)
  init = jax.jit(lambda r: adapted.init(r, batch)['params'])(jax.random.key(0))
  params = train.merge_params(init, loaded)
  flat, flat_loaded = _flat(params), _flat(loaded)
  assert {k for k in flat if not lora.is_adapter(k)} - set(flat_loaded) == {('head', 'kernel')}
  np.testing.assert_array_equal(flat[('backbone', 'layer_0', 'attention', 'q', 'kernel')],
                                flat_loaded[('backbone', 'layer_0', 'attention', 'q', 'kernel')])
  base = hf_import.init_params(plain, jax.random.key(0), batch)
  # two programs: equal up to float rounding (fresh adapters add exactly zero; a non-zero B
  # moves features by ~1e-2)
  np.testing.assert_allclose(_logits(adapted, params, batch, 'features'),
                             _logits(plain, base, batch, 'features'), rtol=1e-5, atol=1e-5)


def test_init_adapter_for_checkpoint_loading():
  s = jax.ShapeDtypeStruct((64, 8), jnp.float32)
  a1 = lora.init_adapter(('backbone', 'h_0', 'attn', 'q', 'lora_a'), s, jax.random.key(0))
  a2 = lora.init_adapter(('backbone', 'h_0', 'attn', 'k', 'lora_a'), s, jax.random.key(0))
  b = lora.init_adapter(('backbone', 'h_0', 'attn', 'q', 'lora_b'), s, jax.random.key(0))
  assert a1.shape == (64, 8) and np.all(b == 0) and not np.allclose(a1, a2)
  assert 0 < np.abs(a1).max() <= 1 / 8  # PEFT's bound 1/sqrt(in)


@pytest.mark.parametrize('extra,message', [
    (dict(lora=dict(targets=('attn',))), "unknown target 'attn'"),
    (dict(lora=dict(targets=())), 'none given'),
    (dict(lora=dict(rank=0)), 'rank=0 must be'),
    (dict(lora=dict(rank=2.5)), 'rank=2.5 must be'),
    (dict(lora=dict(alpha=-1)), 'alpha=-1 must be'),
    (dict(lora=dict(dropout=1.0)), 'dropout=1.0 must be'),
    (dict(lora=dict(r=8)), r"unknown option\(s\) \['r'\]"),
    (dict(lora=8), 'must be None or dict'),
    (dict(lora=dict(rank=8), frozen=True), 'exclude each other'),
])
@pytest.mark.parametrize('family', ['bert', 'gpt2', 'llama'])
def test_bad_options_are_one_line_user_errors(family, extra, message):
  with pytest.raises(UserError, match=message) as e:
    registry.build('models', dict(name=family, size='tiny', **extra), num_classes=2)
  assert '\n' not in str(e.value) and str(e.value).startswith(f'{family}')


def test_the_trainer_updates_only_adapters_and_head(tmp_path):
  """`train.fit` reads `trainable_mask`: between step 1 and step 4 of the same run only LoRA
  adapters and the head moved (frozen leaves bit-identical), and frozen leaves keep no moments."""
  import jax
  import numpy as np
  from ml_collections import ConfigDict
  from w2s import registry, sharding, train
  from test_models_train import _text_examples
  examples = _text_examples(n=64)
  module = registry.build('models', dict(name='gpt2', size='tiny', dropout=0.0,
                                         lora=dict(rank=4, alpha=8)), num_classes=2)

  def run(steps):
    cfg = ConfigDict(dict(seed=0, loss=dict(name='xent'),
                          optimizer=dict(name='adam', learning_rate=1e-2),
                          schedule=dict(name='constant'), batch_size=16, num_steps=steps,
                          log_every=1, checkpoint_every=100, keep_checkpoints=1))
    return train.fit(module, examples, cfg=cfg, workdir=str(tmp_path / str(steps)),
                     mesh=sharding.make_mesh())[0]
  one, four = run(1), run(4)
  mask = module.trainable_mask(one.params)
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                       four.params, one.params)
  flat_moved = jax.tree_util.tree_flatten_with_path(moved)[0]
  assert len(flat_moved) == len(jax.tree.leaves(mask)) and any(jax.tree.leaves(mask))
  for (path, m), t in zip(flat_moved, jax.tree.leaves(mask)):
    assert m == t, jax.tree_util.keystr(path)  # trainable leaves moved, frozen ones bit-identical
  n_params, n_opt = len(jax.tree.leaves(one.params)), len(jax.tree.leaves(one.opt_state))
  assert n_opt < 2 * n_params  # Adam moments for the adapters and head only
