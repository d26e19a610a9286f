"""ELR (Liu et al. 2020): hand-computed values, the per-example state, and the trainer keeping it."""
import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from w2s import registry, sharding, train
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.losses import elr


def test_values_and_state_update_by_hand():
  logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
  labels = np.array([[1.0, 0.0], [0.3, 0.7], [0.5, 0.5]], np.float32)
  mask = np.array([1.0, 1.0, 0.0], np.float32)
  targets = np.zeros((5, 2), np.float32)
  targets[3] = [0.2, 0.8]
  batch = {'index': np.array([3, 0, 4])}
  per, aux = elr.loss(logits=logits, labels=labels, mask=mask, batch=batch,
                      loss_state={'targets': targets}, lam=3.0, beta=0.7)
  # by hand: p = softmax(z); t_new = 0.7 t_old + 0.3 p (clip is inactive here)
  e = np.exp(2.0)
  p0 = np.array([e / (e + 1), 1 / (e + 1)])
  p1 = np.array([1 / (1 + np.e), np.e / (1 + np.e)])
  t0 = 0.7 * np.array([0.2, 0.8]) + 0.3 * p0
  t1 = 0.3 * p1
  want0 = -np.log(p0[0]) + 3.0 * np.log(1 - t0 @ p0)
  want1 = -(0.3 * np.log(p1[0]) + 0.7 * np.log(p1[1])) + 3.0 * np.log(1 - t1 @ p1)
  np.testing.assert_allclose(per, [want0, want1, 0.0], rtol=1e-5)
  new = np.asarray(aux['loss_state']['targets'])
  np.testing.assert_allclose(new[3], t0, rtol=1e-6)
  np.testing.assert_allclose(new[0], t1, rtol=1e-6)
  np.testing.assert_array_equal(new[[1, 2, 4]], targets[[1, 2, 4]])  # untouched, padded row too
  np.testing.assert_allclose(aux['elr_reg'], (np.log(1 - t0 @ p0) + np.log(1 - t1 @ p1)) / 2,
                             rtol=1e-5)


def test_without_state_is_a_clear_error():
  with pytest.raises(UserError, match='per-example targets'):
    elr.loss(logits=np.zeros((1, 2)), labels=np.ones((1, 2)) / 2, mask=np.ones(1))


def _cfg(**kw):
  c = dict(seed=0, loss=dict(name='elr', lam=3.0, beta=0.7),
           optimizer=dict(name='adam', learning_rate=3e-3), schedule=dict(name='constant'),
           batch_size=64, num_epochs=0.0, num_steps=6, accum_steps=1, log_every=3,
           checkpoint_every=3, keep_checkpoints=2)
  c.update(kw)
  return ConfigDict(c)


def test_trainer_keeps_the_targets_sharded_and_resumed(tmp_path):
  ds = registry.build('datasets', dict(name='digits'))
  ex = pipeline.one_hot_labels({k: ds.split('train')[k] for k in ('id', 'label', 'x')}, 10)
  module = registry.build('models', dict(name='mlp', hidden=(16,)), num_classes=10)
  one, _ = train.fit(module, ex, cfg=_cfg(), workdir=str(tmp_path / 'one'),
                     mesh=sharding.make_mesh(1))
  eight, _ = train.fit(module, ex, cfg=_cfg(), workdir=str(tmp_path / 'eight'),
                       mesh=sharding.make_mesh())
  targets = np.asarray(eight.extra['loss']['targets'])
  assert targets.shape == (len(ex['id']), 10)
  visited = (targets.sum(-1) > 0).sum()
  assert visited == 6 * 64  # one epoch-order pass of 6 batches: each row updated once
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               (one.params, one.extra), (eight.params, eight.extra))
  # resumed from the step-3 checkpoint, the targets continue where they were
  import shutil
  shutil.rmtree(tmp_path / 'eight' / 'checkpoints' / '6')
  resumed, _ = train.fit(module, ex, cfg=_cfg(), workdir=str(tmp_path / 'eight'),
                         mesh=sharding.make_mesh())
  np.testing.assert_array_equal(np.asarray(resumed.extra['loss']['targets']), targets)
