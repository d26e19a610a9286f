"""Specialist ensembles (Liu & Alahi 2024, CSL): member k trains only on the rows of its classes and
predicts only those (probabilities exactly 0 elsewhere); bad subsets are refused."""
import numpy as np
import pytest
from ml_collections import ConfigDict

from w2s import ensemble, registry, sharding
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.protocols import learners

SPECIALISTS = ((0, 1, 2, 3, 4), (4, 5, 6, 7, 8, 9))  # overlapping on class 4


def _cfg(seed=0):
  return ConfigDict(dict(seed=seed, loss=dict(name='xent'),
                         optimizer=dict(name='adam', learning_rate=3e-3),
                         schedule=dict(name='constant'), batch_size=32, num_epochs=0.0,
                         num_steps=4, accum_steps=1, log_every=4, checkpoint_every=100,
                         keep_checkpoints=1))


@pytest.fixture(scope='module')
def digits():
  ds = registry.build('datasets', dict(name='digits'))
  masks = learners.class_masks(SPECIALISTS, 10)
  out = {}
  for s in ('train', 'test'):
    ex = pipeline.one_hot_labels({k: ds.split(s)[k] for k in ('id', 'label', 'x')}, 10)
    ex['class_mask'] = np.broadcast_to(masks, (len(ex['id']),) + masks.shape).copy()
    out[s] = ex
  return out


@pytest.fixture(scope='module')
def module():
  return registry.build('models', dict(name='mlp', hidden=(16,), zero_head=False), num_classes=10)


def test_specialise_keeps_only_each_members_rows(digits):
  members = ensemble.specialise(digits['train'], 2)
  cls = digits['train']['label'].argmax(-1)
  for m, classes in zip(members, SPECIALISTS):
    assert set(np.unique(m['label'].argmax(-1))) == set(classes)
    assert len(m['id']) == np.isin(cls, classes).sum()
    np.testing.assert_array_equal(m['class_mask'][0], np.isin(np.arange(10), classes))


def test_members_train_on_their_classes_and_predict_only_them(digits, module, tmp_path):
  mesh = sharding.make_mesh(1)  # one device: 8 fake CPU devices only slow the compiles
  seeds = ensemble.member_seeds(0, 2)
  stacked, last = ensemble.fit_ensemble(module, digits['train'], cfg=_cfg(), seeds=seeds,
                                        workdir=str(tmp_path / 'ens'), mesh=mesh)
  # a row labelled outside a member's classes would cost it -log 0 = 1e30 (NEG_LOGIT): none did
  assert 0 < last['loss'] < 5
  pred = ensemble.predict_ensemble(module, stacked.params, digits['test'], batch_size=64,
                                   mesh=mesh)
  z = pred['member_logits'].astype(np.float64)
  probs = np.exp(z - z.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  for k, classes in enumerate(SPECIALISTS):
    outside = ~np.isin(np.arange(10), classes)
    assert (probs[:, k][:, outside] == 0).all()       # exactly 0, not small
    assert (probs[:, k][:, ~outside] > 0).all()
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def _role(specialists, size=2, eval_every=0):
  return learners.RoleOptions.from_section('weak', dict(
      model=dict(name='mlp'), loss=dict(name='xent'), train=dict(eval_every=eval_every),
      ensemble=dict(size=size, specialists=specialists)), input_kind='vector')


@pytest.mark.parametrize('specialists, size, match', [
    ([[0, 1]], 2, 'size=2'),                     # one list for two members
    ([[0, 1], []], 2, 'non-empty'),
    ([[0, 1], ['a']], 2, 'class ids'),
    ([[0, 0], [1]], 2, 'twice'),
    ([[0, 1]], 1, r'\(> 1\)'),
])
def test_bad_subsets_are_refused(specialists, size, match):
  with pytest.raises(UserError, match=match):
    _role(specialists, size)


def test_uncovered_or_unknown_classes_are_refused():
  opts = _role([[0, 1], [2]])
  assert opts.spec()['ensemble']['specialists'] == [[0, 1], [2]]
  with pytest.raises(UserError, match=r'classes \[3\]'):
    learners.class_masks(opts.specialists, 4)
  with pytest.raises(UserError, match=r'outside \[0, 3\)'):
    learners.class_masks(((0, 1), (2, 3)), 3)
  with pytest.raises(UserError, match='eval_every=0'):
    _role([[0, 1], [2]], eval_every=10)
  with pytest.raises(UserError, match='no training row'):
    ex = {'id': np.arange(4), 'label': np.eye(3, dtype=np.float32)[[0, 1, 0, 1]],
          'class_mask': np.broadcast_to(learners.class_masks(((0, 1), (2,)), 3), (4, 2, 3))}
    ensemble.specialise(ex, 2)
