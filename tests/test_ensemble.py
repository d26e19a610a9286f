"""Weak ensembles: K members in one vmapped step equal K separate runs with the same seeds."""
import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from w2s import ensemble, registry, sharding, train
from w2s.data import pipeline


def _cfg(seed=0):
  return ConfigDict(dict(seed=seed, loss=dict(name='xent'),
                         optimizer=dict(name='adam', learning_rate=3e-3),
                         schedule=dict(name='cosine', warmup_frac=0.1), batch_size=32,
                         num_epochs=0.0, num_steps=10, accum_steps=1, log_every=5,
                         checkpoint_every=100, keep_checkpoints=1))


@pytest.fixture(scope='module')
def digits():
  ds = registry.build('datasets', dict(name='digits'))
  return {s: pipeline.one_hot_labels({k: ds.split(s)[k] for k in ('id', 'label', 'x')}, 10)
          for s in ('train', 'test')}


@pytest.mark.parametrize('bagging', [False, True])
def test_vmapped_members_equal_separate_runs(digits, tmp_path, bagging):
  module = registry.build('models', dict(name='mlp', hidden=(32,), dropout=0.1, zero_head=False),
                          num_classes=10)
  mesh = sharding.make_mesh()
  seeds = ensemble.member_seeds(3, 3)
  stacked, _ = ensemble.fit_ensemble(module, digits['train'], cfg=_cfg(), seeds=seeds,
                                     workdir=str(tmp_path / 'ens'), mesh=mesh, bagging=bagging)
  pred = ensemble.predict_ensemble(module, stacked.params, digits['test'], batch_size=64, mesh=mesh)
  assert pred['member_logits'].shape == (len(digits['test']['id']), 3, 10)
  np.testing.assert_array_equal(pred['id'], digits['test']['id'])
  for k, seed in enumerate(seeds):
    data = ensemble.bag(digits['train'], seed) if bagging else digits['train']
    alone, _ = train.fit(module, data, cfg=_cfg(seed), workdir=str(tmp_path / f'm{k}'), mesh=mesh)
    member = jax.tree.map(lambda x: x[k], stacked.params)
    # the same arithmetic batched differently: float32 rounding only (a member with another seed
    # or bag differs by ~1e-3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), member,
                 alone.params)
    logits = train.predict(module, alone.params, digits['test'], batch_size=64, mesh=mesh)['logits']
    np.testing.assert_allclose(pred['member_logits'][:, k], logits, rtol=1e-5, atol=1e-5)


def test_members_differ_and_bags_resample(digits):
  a, b = (ensemble.bag(digits['train'], s) for s in (1, 2))
  assert len(a['id']) == len(digits['train']['id'])
  assert len(np.unique(a['id'])) < len(a['id'])  # with replacement
  assert not np.array_equal(a['id'], b['id'])
