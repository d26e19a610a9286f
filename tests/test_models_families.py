"""Model families through the registry: shapes, zero head, pooling, padding, dtype, remat, dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s import registry
from w2s.errors import UserError
from w2s.models import classifier, hf_import

TEXT = [dict(name='bert', size='tiny'), dict(name='gpt2', size='tiny'),
        dict(name='llama', size='tiny'), dict(name='llama', size='qwen2-tiny')]


def _text_batch(pad_id=0):
  rs = np.random.RandomState(0)
  ids = rs.randint(1, 500, (4, 16)).astype(np.int32)
  mask = (np.arange(16)[None] < np.array([[16], [9], [3], [12]])).astype(np.int32)
  ids[mask == 0] = pad_id
  return {'input_ids': ids, 'attention_mask': mask}


def _image_batch():
  return {'x': np.random.RandomState(0).rand(4, 8, 8, 3).astype(np.float32)}


def test_registry_lists_families_and_not_helpers():
  names = registry.known('models')
  assert {'bert', 'cnn', 'gpt2', 'llama', 'resnet'} <= set(names)
  assert not {'attention', 'classifier', 'decoding', 'features', 'hf_import'} & set(names)


IMAGE = [dict(name='resnet', size='tiny'), dict(name='cnn', size='small')]


@pytest.mark.parametrize('spec', TEXT + IMAGE, ids=lambda s: str(s))
def test_forward_zero_head_padding_and_bf16(spec):
  model = registry.build('models', spec, num_classes=3)
  text = spec not in IMAGE
  batch = _text_batch() if text else _image_batch()
  params = hf_import.init_params(model, jax.random.key(0), batch)
  logits = jax.jit(model.apply)({'params': params}, batch)
  feats = _features(model, params, batch)
  assert logits.shape == (4, 3) and feats.shape[0] == 4 and feats.dtype == jnp.float32
  np.testing.assert_array_equal(logits, 0)  # the head starts at zero (Burns et al., 2023)
  assert np.abs(feats).max() > 0 and all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  if text:
    # padding never counts, whatever id it uses (GPT-2 pads with eos, a real token), and a
    # padded row's features are those of the row alone
    np.testing.assert_allclose(_features(model, params, _text_batch(pad_id=257)), feats,
                               rtol=1e-5, atol=1e-6)
    n = int(batch['attention_mask'][2].sum())
    alone = {k: v[2:3, :n] for k, v in batch.items()}
    np.testing.assert_allclose(_features(model, params, alone)[0], feats[2], rtol=1e-5, atol=1e-6)
  # bf16 compute with the same float32 params: features close to the fp32 ones
  bf16 = registry.build('models', dict(spec, dtype='bfloat16'), num_classes=3)
  feats16 = _features(bf16, params, batch)
  assert feats16.dtype == jnp.float32
  rel = np.linalg.norm(feats16 - feats) / np.linalg.norm(feats)
  assert rel < 0.05, rel


def _features(model, params, batch):
  return jax.jit(lambda p, b: model.apply({'params': p}, b, method='features'))(params, batch)


def test_pooling_by_hand():
  hidden = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)  # [[0,1],[2,3],[4,5]], ...
  mask = jnp.array([[1, 1, 0], [1, 1, 1]])
  np.testing.assert_array_equal(classifier.pool(hidden, mask, 'last'), [[2, 3], [10, 11]])
  np.testing.assert_array_equal(classifier.pool(hidden, mask, 'mean'), [[1, 2], [8, 9]])
  np.testing.assert_array_equal(classifier.pool(hidden, mask, 'cls'), [[0, 1], [6, 7]])
  left = jnp.array([[0, 1, 1], [1, 1, 1]])  # left padding: last real token is still the last
  np.testing.assert_array_equal(classifier.pool(hidden, left, 'last'), [[4, 5], [10, 11]])


@pytest.mark.parametrize('spec', [TEXT[2], dict(name='resnet', size='tiny')], ids=lambda s: s['name'])
def test_remat_same_gradients_and_frozen_backbone(spec):
  batch = _image_batch() if spec['name'] == 'resnet' else _text_batch()
  model = registry.build('models', dict(spec, dropout=0.0), num_classes=3)
  params = hf_import.init_params(model, jax.random.key(0), batch)
  params['head']['kernel'] = jnp.ones_like(params['head']['kernel'])  # else backbone grads are 0
  def grads(m):
    loss = lambda p: (m.apply({'params': p}, batch, train=True) ** 2).sum()
    return jax.jit(jax.grad(loss))(params)
  plain = grads(model)
  remat = grads(registry.build('models', dict(spec, dropout=0.0, remat=True), num_classes=3))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3), plain, remat)
  assert max(np.abs(g).max() for g in jax.tree.leaves(plain['backbone'])) > 0
  frozen = grads(registry.build('models', dict(spec, dropout=0.0, frozen=True), num_classes=3))
  assert all(np.all(g == 0) for g in jax.tree.leaves(frozen['backbone']))
  # same head gradient (values ~5; float32 rounding of two compilations differs by ~3e-6 of that)
  np.testing.assert_allclose(frozen['head']['kernel'], plain['head']['kernel'], rtol=1e-4,
                             atol=1e-6)


def test_dropout_only_in_training():
  model = registry.build('models', dict(name='gpt2', size='tiny', dropout=0.5), num_classes=2)
  batch = _text_batch()
  params = hf_import.init_params(model, jax.random.key(0), batch)
  f = jax.jit(lambda train, k: model.apply({'params': params}, batch, method='features',
                                           train=train, rngs={'dropout': jax.random.key(k)}),
              static_argnums=0)
  np.testing.assert_array_equal(f(False, 1), f(False, 2))
  assert np.abs(f(True, 1) - f(True, 2)).max() > 1e-3


@pytest.mark.parametrize('spec,message', [
    (dict(name='gpt2', size='huge'), 'unknown size'),
    (dict(name='llama', size='tiny', num_layer=3), 'unknown hparam'),
    (dict(name='bert', size='tiny', pooling='max'), 'unknown pooling'),
    (dict(name='gpt2'), 'give size='),
    (dict(name='resnet', size='tiny', dtype='float65'), 'unknown dtype'),
    (dict(name='cnn', size='huge'), 'unknown size'),
    (dict(name='cnn', size='small', remat=True), 'unknown hparam'),
])
def test_bad_hparams_are_user_errors(spec, message):
  with pytest.raises(UserError, match=message):
    registry.build('models', spec, num_classes=2)


def test_presets_have_the_published_sizes():
  """Parameter counts of the presets (shapes only, nothing allocated) vs the published models."""
  def count(spec):
    model = registry.build('models', spec, num_classes=2)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), _text_batch()))
    return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes['params']['backbone']))
  assert count(dict(name='gpt2', size='small')) == 124_439_808  # GPT2Model
  assert count(dict(name='bert', size='minilm-l6')) == 22_565_376  # BertModel without pooler
  assert count(dict(name='llama', size='qwen2-0.5b')) == 494_032_768  # Qwen2-0.5B (tied)


def test_sequences_longer_than_the_position_table_are_user_errors():
  model = registry.build('models', dict(name='gpt2', size='tiny'), num_classes=2)
  too_long = {'input_ids': np.zeros((1, 257), np.int32),
              'attention_mask': np.ones((1, 257), np.int32)}
  with pytest.raises(UserError, match='256 learned positions'):
    hf_import.init_params(model, jax.random.key(0), too_long)
