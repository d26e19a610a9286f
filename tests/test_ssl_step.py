"""The online semi-supervised step inside `fit`: 1 vs 8 devices, exact resume of the algorithm's
state and the EMA teacher, hidden labels never reaching the algorithm, and bad input."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from w2s import registry, sharding, train
from w2s.data import pipeline
from w2s.errors import UserError


@pytest.fixture(scope='module')
def digits():
  ds = registry.build('datasets', dict(name='digits'))
  tr = pipeline.one_hot_labels({k: ds.split('train')[k] for k in ('id', 'label', 'x')}, 10)
  lab = {k: v[:64] for k, v in tr.items()}
  unl = {k: v[64:640] for k, v in tr.items()}
  return lab, unl


def _cfg(algo, **kw):
  # FlexMatch records a row's class once its confidence passes tau: 0.12 is passed in 10 steps
  ssl = dict(name=algo, **({'tau': 0.12} if algo == 'flexmatch' else {}))
  return dict(loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=3e-3),
              batch_size=16, num_steps=10, ssl=ssl, unlabelled_ratio=2,
              checkpoint_every=5, log_every=5, **kw)


def _model():
  return registry.build('models', dict(name='mlp', hidden=(32,), dropout=0.1), num_classes=10)


@pytest.mark.parametrize('algo', ['fixmatch', 'flexmatch', 'mean_teacher', 'defixmatch'])
def test_eight_devices_match_one(digits, tmp_path, algo):
  lab, unl = digits
  cfg = _cfg(algo, ema_decay=0.9 if algo == 'fixmatch' else 0.0)
  one, _ = train.fit(_model(), lab, cfg=cfg, workdir=str(tmp_path / '1'),
                     mesh=sharding.make_mesh(1), unlabelled=unl)
  eight, m8 = train.fit(_model(), lab, cfg=cfg, workdir=str(tmp_path / '8'),
                        mesh=sharding.make_mesh(8), unlabelled=unl)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                                       atol=1e-6),
               (one.params, one.extra), (eight.params, eight.extra))
  assert 'loss_u' in m8 and 0.0 <= float(m8['pseudo_acc']) <= 1.0
  if algo == 'flexmatch':  # the per-example classes of U moved away from "unused"
    assert np.any(np.asarray(eight.extra['ssl']['selected_label']) >= 0)
  if algo in ('fixmatch', 'mean_teacher'):
    assert 'ema' in eight.extra


@pytest.mark.parametrize('algo', ['flexmatch', 'mean_teacher', 'softmatch'])
def test_resume_continues_state_and_teacher_exactly(digits, tmp_path, algo):
  lab, unl = digits
  mesh = sharding.make_mesh(1)
  straight, _ = train.fit(_model(), lab, cfg=_cfg(algo), workdir=str(tmp_path / 'a'), mesh=mesh,
                          unlabelled=unl)
  train.fit(_model(), lab, cfg=_cfg(algo), workdir=str(tmp_path / 'b'), mesh=mesh,
            unlabelled=unl)
  shutil.rmtree(tmp_path / 'b' / 'checkpoints' / '10')  # as if it died after step 5's save
  resumed, _ = train.fit(_model(), lab, cfg=_cfg(algo), workdir=str(tmp_path / 'b'), mesh=mesh,
                         unlabelled=unl)
  assert int(resumed.step) == 10
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               (straight.params, straight.extra, straight.opt_state),
               (resumed.params, resumed.extra, resumed.opt_state))


def test_hidden_labels_do_not_reach_the_algorithm(digits, tmp_path):
  """Shuffling U's labels changes nothing but the logged pseudo-label accuracy."""
  lab, unl = digits
  mesh = sharding.make_mesh(1)
  a, ma = train.fit(_model(), lab, cfg=_cfg('fixmatch'), workdir=str(tmp_path / 'a'), mesh=mesh,
                    unlabelled=unl)
  shuffled = {**unl, 'label': unl['label'][np.random.RandomState(0).permutation(len(unl['id']))]}
  b, mb = train.fit(_model(), lab, cfg=_cfg('fixmatch'), workdir=str(tmp_path / 'b'), mesh=mesh,
                    unlabelled=shuffled)
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
               a.params, b.params)
  assert float(ma['loss']) == float(mb['loss'])


def test_unknown_hidden_labels_are_left_out_of_pseudo_acc(digits, tmp_path):
  """Rows of U with unknown labels (all-zero soft rows: a dataset's own unlabelled split) change
  no parameter; 'pseudo_known' is the share of the batch 'pseudo_acc' is scored on."""
  from w2s import ssl_step
  lab, unl = digits
  mesh = sharding.make_mesh(1)
  zero = lambda rows: {**unl, 'label': np.where(rows[:, None], 0.0, unl['label'])}
  n = len(unl['id'])
  half, none = zero(np.arange(n) % 2 == 0), zero(np.ones(n, bool))
  np.testing.assert_array_equal(ssl_step.unlabelled_examples(half)['hidden_label'][:4],
                                [-1, unl['label'][1].argmax(), -1, unl['label'][3].argmax()])
  fits = {k: train.fit(_model(), lab, cfg=_cfg('fixmatch'), workdir=str(tmp_path / k), mesh=mesh,
                       unlabelled=u) for k, u in (('all', unl), ('half', half), ('none', none))}
  for k in ('half', 'none'):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                 fits['all'][0].params, fits[k][0].params)
  m = {k: f[1] for k, f in fits.items()}
  assert m['all']['pseudo_known'] == 1.0 and 0.2 < m['half']['pseudo_known'] < 0.8
  assert m['none']['pseudo_known'] == 0.0 and m['none']['pseudo_acc'] == 0.0
  from w2s.protocols import semi_supervised
  assert semi_supervised._pseudo_acc(m['none']) is None
  assert semi_supervised._pseudo_acc(m['all']) == m['all']['pseudo_acc']


def test_bad_ssl_input_is_one_clear_error(digits, tmp_path):
  lab, unl = digits
  mesh = sharding.make_mesh(8)
  with pytest.raises(UserError, match='batch_size=12 is not divisible by the 8 devices'):
    train.fit(_model(), lab, cfg={**_cfg('fixmatch'), 'batch_size': 12},
              workdir=str(tmp_path / 'mu'), mesh=mesh, unlabelled=unl)
  with pytest.raises(UserError, match='fewer than one unlabelled batch'):
    train.fit(_model(), lab, cfg={**_cfg('fixmatch'), 'unlabelled_ratio': 100},
              workdir=str(tmp_path / 'mu'), mesh=mesh, unlabelled=unl)
  with pytest.raises(UserError, match='unknown ssl algorithm .nope.; known: adamatch, '):
    train.fit(_model(), lab, cfg=_cfg('nope'), workdir=str(tmp_path / 'x'), mesh=mesh,
              unlabelled=unl)
  with pytest.raises(UserError, match='needs unlabelled examples'):
    train.fit(_model(), lab, cfg=_cfg('fixmatch'), workdir=str(tmp_path / 'y'), mesh=mesh)
  assert not os.path.exists(tmp_path / 'mu' / 'checkpoints')


def test_ssl_config_runs_end_to_end_with_its_views(tmp_path):
  """configs/ssl.py:runlocal: FixMatch with translate / RandAugment + cutout views, EMA eval."""
  from w2s.configs import ssl as ssl_config
  config = ssl_config.get_config('runlocal,seeds=1')
  results = train.train_and_evaluate(config, str(tmp_path))
  rec = results['per_seed'][0]
  assert rec['n_labelled'] == 40 and rec['n_unlabelled'] == 512
  assert 0.0 <= rec['acc'] <= 1.0 and 0.0 <= rec['mask_rate'] <= 1.0
  saved = json.load(open(tmp_path / 'results.json'))
  assert saved['summary']['acc']['n'] == 1
  points = ssl_config.get_sweep()
  assert len(points) == 6 and {p['model.train.ssl']['name'] for p in points} == {
      'supervised', 'fixmatch', 'mean_teacher'}
