"""The trainer: sharding invariance, gradient accumulation, resume, user plug-ins."""
import json
import os
import sys

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from w2s import registry, sharding, train
from w2s.data import pipeline
from w2s.errors import UserError

sys.path.insert(0, os.path.dirname(__file__))  # for the custom_losses module


def _cfg(**kw):
  c = dict(seed=0, loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=3e-3),
           schedule=dict(name='cosine', warmup_frac=0.1), batch_size=64, num_epochs=0.0,
           num_steps=12, accum_steps=1, log_every=4, checkpoint_every=100, keep_checkpoints=2)
  c.update(kw)
  return ConfigDict(c)


@pytest.fixture(scope='module')
def digits():
  ds = registry.build('datasets', dict(name='digits'))
  feats = {k: ds.split('train')[k] for k in ('id', 'label', 'x')}
  test = {k: ds.split('test')[k] for k in ('id', 'label', 'x')}
  return (pipeline.one_hot_labels(feats, 10), pipeline.one_hot_labels(test, 10))


def _module(dropout=0.1):
  return registry.build('models', dict(name='mlp', hidden=(32,), dropout=dropout, zero_head=False),
                        num_classes=10)


def test_eight_devices_match_one_device(digits, tmp_path):
  assert jax.device_count() == 8
  train_ex, test_ex = digits
  results = {}
  for n in (1, 8):
    mesh = sharding.make_mesh(n)
    state, _ = train.fit(_module(), train_ex, cfg=_cfg(), workdir=str(tmp_path / f'd{n}'), mesh=mesh)
    pred = train.predict(_module(), state.params, test_ex, batch_size=64, mesh=mesh)
    # 359 test examples over batches of 64: the last batch is padded, and nothing counts twice
    np.testing.assert_array_equal(pred['id'], test_ex['id'])
    results[n] = (jax.device_get(state.params), pred['logits'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), results[1][0], results[8][0])
  np.testing.assert_allclose(results[1][1], results[8][1], rtol=1e-4, atol=1e-4)


def test_gradient_accumulation_matches_full_batch(digits, tmp_path):
  train_ex, _ = digits
  mesh = sharding.make_mesh()
  no_dropout = _module(dropout=0.0)
  full, _ = train.fit(no_dropout, train_ex, cfg=_cfg(), workdir=str(tmp_path / 'a1'), mesh=mesh)
  acc, _ = train.fit(no_dropout, train_ex, cfg=_cfg(accum_steps=4, batch_size=64),
                     workdir=str(tmp_path / 'a4'), mesh=mesh)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), full.params, acc.params)


def test_padded_rows_never_count(digits):
  """A batch padded with garbage rows (mask 0) gives the same update as the real rows alone."""
  train_ex, _ = digits
  mesh = sharding.make_mesh(1)
  module = _module(dropout=0.0)
  cfg = _cfg()
  tx, schedule = train._make_tx(cfg, 10)
  batch = {k: v[:8] for k, v in train_ex.items()}
  batch['mask'] = np.ones(8, np.float32)
  params = module.init({'params': jax.random.PRNGKey(0)}, batch)['params']
  state = train.TrainState(step=np.int32(0), params=params, opt_state=tx.init(params),
                           rng=jax.random.PRNGKey(1))
  step = jax.jit(lambda s, b: train.train_step(
      s, b, apply_fn=train.linen_apply_fn(module), loss_fn=registry.bind('losses', cfg.loss),
      tx=tx, schedule=schedule, total_steps=10))
  real, m_real = step(state, batch)
  padded = {k: np.concatenate([v, v[::-1] * 7]) for k, v in batch.items()}
  padded['mask'] = np.concatenate([np.ones(8), np.zeros(8)]).astype(np.float32)
  pad, m_pad = step(state, padded)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), real.params, pad.params)
  np.testing.assert_allclose(m_real['loss'], m_pad['loss'], rtol=1e-6)
  del mesh


def test_resume_in_same_workdir_continues_and_matches(digits, tmp_path):
  train_ex, _ = digits
  mesh = sharding.make_mesh()
  straight, _ = train.fit(_module(), train_ex, cfg=_cfg(num_steps=12), workdir=str(tmp_path / 's'),
                          mesh=mesh)
  # the same run stopped after 6 steps (its checkpoint), then continued to 12 in the same workdir
  part = str(tmp_path / 'p')
  train.fit(_module(), train_ex, cfg=_cfg(num_steps=12, checkpoint_every=6), workdir=part, mesh=mesh)
  import shutil
  shutil.rmtree(os.path.join(part, 'checkpoints', '12'))
  resumed, _ = train.fit(_module(), train_ex, cfg=_cfg(num_steps=12), workdir=part, mesh=mesh)
  assert int(resumed.step) == 12
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               straight.params, resumed.params)


def test_user_loss_by_dotted_path(digits, tmp_path):
  train_ex, _ = digits
  cfg = _cfg(loss=dict(name='custom_losses:scaled_xent', scale=2.0), num_steps=4, log_every=2)
  train.fit(_module(), train_ex, cfg=cfg, workdir=str(tmp_path), mesh=sharding.make_mesh())
  records = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in records] == [2, 4]
  assert all(r['custom_scale'] == 2.0 for r in records)
  for key in ('loss', 'learning_rate', 'grad_norm', 'examples_per_sec'):
    assert key in records[0]


def test_unknown_names_list_the_known_ones():
  with pytest.raises(UserError, match='known: .*xent'):
    registry.get('losses', 'no_such_loss')
  with pytest.raises(UserError, match='known: .*mlp'):
    registry.get('models', 'no_such_model')
  with pytest.raises(UserError, match='cannot import module'):
    registry.get('losses', 'no_such_pkg.mod:fn')


def test_indivisible_batch_is_an_error(digits, tmp_path):
  train_ex, _ = digits
  with pytest.raises(UserError, match='not divisible by the 8 devices'):
    train.fit(_module(), train_ex, cfg=_cfg(batch_size=60), workdir=str(tmp_path),
              mesh=sharding.make_mesh())
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_nan_guard_names_step_and_metric(digits, tmp_path):
  train_ex, _ = digits
  bad = dict(train_ex)
  bad['x'] = bad['x'].copy()
  bad['x'][:] = np.nan
  with pytest.raises(UserError, match=r'loss is nan at step 4'):
    train.fit(_module(), bad, cfg=_cfg(num_steps=8), workdir=str(tmp_path), mesh=sharding.make_mesh())
  assert not os.listdir(tmp_path / 'checkpoints') or not any(
      d.isdigit() for d in os.listdir(tmp_path / 'checkpoints'))
