"""Parameter sharding: FSDP and tensor-parallel layouts equal one device; restores across meshes."""
import functools

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from w2s import partition, registry, sharding, train
from w2s.errors import UserError
from test_models_train import _digit_examples, _text_examples  # noqa: E402  (tests/ on sys.path)

MESHES = [dict(data=8), dict(data=4, fsdp=2), dict(data=2, fsdp=4), dict(data=1, fsdp=8)]
FAMILIES = [
    dict(name='mlp', hidden=(64,), dropout=0.0, zero_head=False),
    dict(name='bert', size='tiny', vocab_size=512, dropout=0.0),
    dict(name='gpt2', size='tiny', dropout=0.0),
    dict(name='llama', size='tiny'),
    dict(name='cnn', size='small', image_shape=(8, 8, 1)),
]
FSDP_ALL = dict(rules='fsdp', min_bytes=0)  # tiny test models: shard every tensor that divides


def _cfg(part, steps=2):
  # SGD: Adam's m / sqrt(v) turns float rounding of a near-zero gradient into a +-lr step, which
  # would hide real differences behind a loose tolerance; SGD's update is linear in the gradient
  return ConfigDict(dict(
      seed=0, loss=dict(name='xent'), optimizer=dict(name='sgd', learning_rate=0.5),
      schedule=dict(name='constant'), batch_size=16, num_steps=steps, log_every=1,
      checkpoint_every=1000, keep_checkpoints=1, partition=part))


def _examples(spec):
  return _digit_examples() if spec['name'] in ('mlp', 'cnn') else _text_examples(n=64)


def _max_rel_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)) / (np.abs(np.asarray(y)) + 1e-6)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# every mesh for the MLP; one 2-D mesh for each transformer / conv family (keeps the suite short)
CASES = [(FAMILIES[0], MESHES)] + [(f, [m]) for f, m in zip(FAMILIES[1:], MESHES[1:] + MESHES[2:])]


@pytest.mark.parametrize('spec,meshes', CASES, ids=lambda c: c['name'] if isinstance(c, dict) else '')
def test_fsdp_step_equals_one_device(spec, meshes, tmp_path):
  examples = _examples(spec)
  module = registry.build('models', spec, num_classes=examples['label'].shape[1])
  ref, ref_m = train.fit(module, examples, cfg=_cfg('replicate'), workdir=str(tmp_path / 'one'),
                         mesh=sharding.make_mesh(1))
  full = partition.per_device_bytes(ref.params)
  for shape in meshes:
    mesh = sharding.make_mesh(shape=shape)
    state, m = train.fit(module, examples, cfg=_cfg(FSDP_ALL), mesh=mesh,
                         workdir=str(tmp_path / '-'.join(f'{k}{v}' for k, v in shape.items())))
    np.testing.assert_allclose(m['loss'], ref_m['loss'], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=1e-5, atol=1e-6),
                 state.params, ref.params)
    n = mesh.shape['fsdp']
    for leaf in jax.tree.leaves(state.params):  # each sharded dim is split n ways
      shard = leaf.addressable_shards[0].data.shape
      for dim, axis, size in zip(leaf.shape, leaf.sharding.spec, shard):
        assert size == (dim // n if axis == 'fsdp' else dim)
    per_device = partition.per_device_bytes(state.params)
    print(f'{spec["name"]} {shape}: params per device {per_device} B of {full} B '
          f'({full / per_device:.1f}x less)')
    if n > 1:  # biases/norms whose size n does not divide stay whole: a little above 1/n
      assert per_device < full / n * 1.5


def test_tensor_parallel_rules_equal_one_device(tmp_path):
  """Megatron-style column / row split of an MLP over 'tensor' (explicit rules)."""
  examples = _examples(FAMILIES[0])
  module = registry.build('models', FAMILIES[0], num_classes=10)
  rules = [('Dense_0/kernel', (None, 'tensor')), ('Dense_0/bias', ('tensor',)),
           ('Dense_1/kernel', ('tensor', None)), ('.*', ())]
  ref, _ = train.fit(module, examples, cfg=_cfg('replicate'), workdir=str(tmp_path / 'one'),
                     mesh=sharding.make_mesh(1))
  mesh = sharding.make_mesh(shape=dict(data=2, fsdp=2, tensor=2))
  state, _ = train.fit(module, examples, cfg=_cfg(rules), workdir=str(tmp_path / 'tp'), mesh=mesh)
  P = jax.sharding.PartitionSpec
  assert state.params['Dense_0']['kernel'].sharding.spec == P(None, 'tensor')
  assert state.params['Dense_1']['kernel'].sharding.spec == P('tensor', None)
  assert state.params['Dense_1']['bias'].sharding.is_fully_replicated
  assert _max_rel_diff(state.params, ref.params) < 1e-4


def test_adam_moments_follow_the_params_they_mirror(tmp_path):
  examples = _examples(FAMILIES[1])
  module = registry.build('models', FAMILIES[1], num_classes=2)
  cfg = _cfg(FSDP_ALL, steps=1)
  cfg.optimizer = dict(name='adam', learning_rate=1e-3)
  state, _ = train.fit(module, examples, cfg=cfg, workdir=str(tmp_path),
                       mesh=sharding.make_mesh(shape=dict(data=2, fsdp=4)))
  spec = lambda t: jax.tree.map(lambda x: x.sharding.spec, t)
  assert spec(state.opt_state[0].mu) == spec(state.params) == spec(state.opt_state[0].nu)
  assert any('fsdp' in s for s in jax.tree.leaves(spec(state.params), is_leaf=lambda x: isinstance(x, tuple)))


def test_checkpoint_restores_onto_another_mesh_and_layout(tmp_path):
  """Saved FSDP on (4, 2), restored on (2, 4) and on one device replicated: the same params."""
  spec = FAMILIES[1]
  examples = _examples(spec)
  module = registry.build('models', spec, num_classes=2)
  wd = str(tmp_path / 'run')
  saved, _ = train.fit(module, examples, cfg=_cfg(FSDP_ALL, steps=3), workdir=wd,
                       mesh=sharding.make_mesh(shape=dict(data=4, fsdp=2)))
  host = jax.tree.map(np.asarray, saved.params)
  # a finished run in the same workdir restores its final state, here onto other layouts
  other, _ = train.fit(module, examples, cfg=_cfg(FSDP_ALL, steps=3), workdir=wd,
                       mesh=sharding.make_mesh(shape=dict(data=2, fsdp=4)))
  one, _ = train.fit(module, examples, cfg=_cfg('replicate', steps=3), workdir=wd,
                     mesh=sharding.make_mesh(1))
  for state in (other, one):
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), state.params, host)
  # each lives in its own layout: a quarter per device on (2, 4), whole on the one device
  full = partition.per_device_bytes(host)
  assert partition.per_device_bytes(other.params) < full / 4 * 1.5
  assert all(len(l.sharding.device_set) == 1 for l in jax.tree.leaves(one.params))


def test_bad_mesh_and_rules_are_one_line_errors():
  with pytest.raises(UserError, match='only one axis may be -1'):
    sharding.make_mesh(shape=dict(data=-1, fsdp=-1))
  with pytest.raises(UserError, match='unknown axis'):
    sharding.make_mesh(shape=dict(model=2))
  with pytest.raises(UserError, match='not divisible by 3'):
    sharding.make_mesh(shape=dict(fsdp=3))
  mesh = sharding.make_mesh(shape=dict(data=4, fsdp=2))
  tree = {'w': jax.ShapeDtypeStruct((1024, 512), np.float32)}
  with pytest.raises(UserError, match='matches no partition rule'):
    partition.specs(tree, mesh, [('other', ())])
  with pytest.raises(UserError, match="names axis 'model'"):
    partition.specs(tree, mesh, [('w', ('model', None))])
  with pytest.raises(UserError, match='partition='):
    partition.check('zero3')
  with pytest.raises(UserError, match='no tensor-parallel rules'):
    partition.specs(tree, mesh, 'tp')
  assert partition.specs(tree, mesh, 'fsdp')['w'] == jax.sharding.PartitionSpec('fsdp', None)
  small = {'b': jax.ShapeDtypeStruct((512,), np.float32)}  # 2 KiB < 1 MiB: stays replicated
  assert partition.specs(small, mesh, 'fsdp')['b'] == jax.sharding.PartitionSpec(None)


def test_memory_plan_is_printed_and_shrinks_with_fsdp(tmp_path, monkeypatch, capsys):
  """W2S_MEMORY_PLAN=1 (automatic on accelerators) prints the compiled step's per-device plan;
  FSDP over 8 devices holds ~1/8 of the params; a device too small is one error before training."""
  from w2s import memory
  monkeypatch.setenv('W2S_MEMORY_PLAN', '1')
  spec = FAMILIES[1]
  examples = _examples(spec)
  module = registry.build('models', spec, num_classes=2)
  train.fit(module, examples, cfg=_cfg('replicate', steps=1), workdir=str(tmp_path / 'r'),
            mesh=sharding.make_mesh(shape=dict(data=8)))
  train.fit(module, examples, cfg=_cfg(FSDP_ALL, steps=1), workdir=str(tmp_path / 'f'),
            mesh=sharding.make_mesh(shape=dict(data=1, fsdp=8)))
  lines = [l for l in capsys.readouterr().out.splitlines() if 'memory per device' in l]
  assert len(lines) == 2, lines
  units = {'B': 1, 'KiB': 1 << 10, 'MiB': 1 << 20, 'GiB': 1 << 30}
  params = [float(l.split('params ')[1].split()[0]) * units[l.split('params ')[1].split()[1].rstrip(',')]
            for l in lines]
  assert params[1] < params[0] / 4, lines
  monkeypatch.setattr(memory, 'device_limit', lambda: 1024)  # a 1 KiB device
  with pytest.raises(UserError, match='needs .* per device but a device has'):
    train.fit(module, examples, cfg=_cfg('replicate', steps=1), workdir=str(tmp_path / 'small'),
              mesh=sharding.make_mesh(shape=dict(data=8)))
  import os
  assert not os.path.exists(tmp_path / 'small' / 'checkpoints' / '1')  # nothing trained


def test_family_tensor_parallel_rules_with_fsdp_equal_one_device(tmp_path):
  """partition='fsdp+tp' on a (data 2, fsdp 2, tensor 2) mesh: the families' Megatron rules
  split q/k/v and MLP-up by column and attention-out / MLP-down by row over 'tensor', FSDP takes
  another dimension; one step equals the single-device step."""
  P = jax.sharding.PartitionSpec
  mesh = sharding.make_mesh(shape=dict(data=2, fsdp=2, tensor=2))
  part = dict(rules='fsdp+tp', min_bytes=0)
  for spec, q, up, down in [
      (FAMILIES[1], 'backbone/layer_0/attention/q', 'backbone/layer_0/intermediate',
       'backbone/layer_0/output'),
      (FAMILIES[2], 'backbone/h_0/attn/q', 'backbone/h_0/c_fc', 'backbone/h_0/c_proj'),
      (FAMILIES[3], 'backbone/layers_0/self_attn/q', 'backbone/layers_0/up_proj',
       'backbone/layers_0/down_proj')]:
    examples = _examples(spec)
    module = registry.build('models', spec, num_classes=2)
    ref, _ = train.fit(module, examples, cfg=_cfg('replicate'), mesh=sharding.make_mesh(1),
                       workdir=str(tmp_path / f'{spec["name"]}-one'))
    state, _ = train.fit(module, examples, cfg=_cfg(part), mesh=mesh,
                         workdir=str(tmp_path / f'{spec["name"]}-tp'))
    get = lambda path: functools.reduce(lambda t, k: t[k], path.split('/'), state.params)
    assert get(q)['kernel'].sharding.spec == P('fsdp', 'tensor')
    assert get(up)['kernel'].sharding.spec == P('fsdp', 'tensor')
    assert get(down)['kernel'].sharding.spec == P('tensor', 'fsdp')
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=1e-5, atol=1e-6),
                 state.params, ref.params)
