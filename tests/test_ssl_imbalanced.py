"""Class-imbalanced SSL: Adsh's adaptive thresholds (w2s/ssl/adsh.py) and the long-tailed L/U split.

Reference numbers are plain numpy in float64 from Guo & Li 2022's Algorithm 1 and the
CIFAR-10-LT construction; the losses run under jax.jit. Padding and 8-vs-1 devices of adsh's
loss are covered by the generic loops of tests/test_ssl.py (they run every logit-level
algorithm); here: its thresholds, its loss and state by hand, and an exact resume in the step.
"""
import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numeric  # tests/numeric.py

from w2s import registry, sharding, train
from w2s.data import base, pipeline, splits
from w2s.errors import UserError
from w2s.ssl import ALGORITHMS, adsh

# 14 rows of U, C = 3: class 0 (the majority) [0.99, 0.95, 0.92, 0.8, 0.7], class 1 [0.85, 0.6,
# 0.5], class 2 [0.7, 0.65, 0.6, 0.4], 2 rows not seen; shuffled
_CONF = [0.99, 0.95, 0.92, 0.8, 0.7, 0.85, 0.6, 0.5, 0.7, 0.65, 0.6, 0.4, 0.0, 0.0]
_PRED = [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, -1, -1]
_P = np.random.default_rng(0).permutation(14)
CONF, PRED = np.array(_CONF)[_P], np.array(_PRED)[_P]


def _f32(a):
  return jnp.asarray(a, jnp.float32)


def _thresholds_np(conf, pred, C, tau, majority=0):
  """Algorithm 1 in float64: rho from the majority class, tau_k = C_k[floor(rho n_k)]."""
  sorted_k = [np.sort(conf[pred == k])[::-1] for k in range(C)]
  n_maj = len(sorted_k[majority])
  rho = (sorted_k[majority] >= tau).sum() / n_maj if n_maj else 0.0
  out = []
  for s in sorted_k:
    m = int(np.floor(rho * len(s) + 1e-9))
    out.append(s[m - 1] if m >= 1 else tau)
  return np.array(out), rho


def test_registered():
  assert 'adsh' in ALGORITHMS and 'adsh' in registry.known('ssl')
  s = adsh.init_state(num_classes=3, num_unlabelled=5)
  assert s['conf'].dtype == jnp.float32 and s['pred'].dtype == jnp.int32
  assert np.asarray(s['pred']).tolist() == [-1] * 5


def test_thresholds_by_hand():
  fn = jax.jit(functools.partial(adsh.class_thresholds, num_classes=3, tau=0.9))
  tau_k, rho = fn(_f32(CONF), jnp.asarray(PRED, jnp.int32))
  # rho = 3/5; class 0: its 3rd largest (the smallest >= 0.9); 1: floor(1.8) = 1st; 2: 2nd
  np.testing.assert_allclose(np.asarray(tau_k), [0.92, 0.85, 0.65], rtol=1e-6)
  np.testing.assert_allclose(float(rho), 0.6, rtol=1e-6)
  # another majority class: class 2 at tau 0.6 admits 3 / 4 -> class 0: floor(3.75) = 3rd
  tau_k, rho = adsh.class_thresholds(_f32(CONF), jnp.asarray(PRED), 3, tau=0.6, majority=2)
  np.testing.assert_allclose(np.asarray(tau_k), [0.92, 0.6, 0.6], rtol=1e-6)
  np.testing.assert_allclose(float(rho), 0.75, rtol=1e-6)
  tau_k, rho = adsh.class_thresholds(_f32(CONF), jnp.asarray(PRED), 3, tau=0.62, majority=2)
  np.testing.assert_allclose(np.asarray(tau_k), [0.95, 0.85, 0.65], rtol=1e-6)  # rho 2 / 4
  # nothing seen yet, or no majority row confident: every class at tau (FixMatch)
  tau_k, rho = adsh.class_thresholds(_f32(np.zeros(4)), jnp.full(4, -1, jnp.int32), 3, tau=0.9)
  np.testing.assert_allclose(np.asarray(tau_k), [0.9] * 3)
  tau_k, _ = adsh.class_thresholds(_f32(CONF), jnp.asarray(PRED), 3, tau=0.999)
  np.testing.assert_allclose(np.asarray(tau_k), [0.999] * 3, rtol=1e-6)


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_thresholds_match_the_reference_on_random_states(seed):
  rng = np.random.default_rng(seed)
  n, c = 200, 5
  pred = rng.integers(-1, c, size=n)
  pred[pred == 3] = 4  # class 3 never predicted: keeps tau
  conf = np.round(rng.uniform(0.2, 1.0, size=n), 3) * (pred >= 0)
  fn = jax.jit(functools.partial(adsh.class_thresholds, num_classes=c, tau=0.8, majority=1))
  tau_k, rho = fn(_f32(conf), jnp.asarray(pred, jnp.int32))
  want, want_rho = _thresholds_np(conf, pred, c, 0.8, majority=1)
  np.testing.assert_allclose(np.asarray(tau_k), want, rtol=1e-6)
  np.testing.assert_allclose(float(rho), want_rho, rtol=1e-6)
  assert float(tau_k[3]) == pytest.approx(0.8) and (abs(want[[0, 2, 4]] - 0.8) > 1e-3).all()


def test_loss_and_state_by_hand():
  lx = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [9.0, -9.0, 0.0]])
  yx = np.array([[1.0, 0.0, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 0.0]])
  pw = np.array([[0.8, 0.1, 0.1], [0.1, 0.88, 0.02], [0.3, 0.3, 0.4], [0.05, 0.05, 0.9]])
  lus = np.array([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.0, 0.0, 1.0], [3.0, -3.0, 0.0]])
  mask_x, mask_u = np.array([1.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0, 0.0])
  index = np.array([12, 0, 13, 5])  # row 3 is padding (its index is a real row: untouched)
  state = {'conf': _f32(CONF), 'pred': jnp.asarray(PRED, jnp.int32)}
  fn = jax.jit(functools.partial(adsh.loss, tau=0.9, lambda_u=2.0))
  loss, aux, new = fn(logits_x=_f32(lx), labels_x=_f32(yx), mask_x=_f32(mask_x),
                      logits_uw=_f32(np.log(pw)), logits_us=_f32(lus), mask_u=_f32(mask_u),
                      state=state, index_u=jnp.asarray(index, jnp.int32))
  logsm = lambda z: z - np.log(np.exp(z).sum(-1, keepdims=True))
  tau_k, rho = _thresholds_np(CONF, PRED, 3, 0.9)  # [0.92, 0.85, 0.65], from the state before
  conf, pred = pw.max(-1), pw.argmax(-1)
  keep = (conf >= tau_k[pred])[:3]  # 0.8 < 0.92 no; 0.88 >= 0.85 yes; 0.4 < 0.65 no
  assert keep.tolist() == [False, True, False]
  loss_x = -(yx[:2] * logsm(lx[:2])).sum(-1).mean()
  loss_u = np.sum(-logsm(lus[:3])[np.arange(3), pred[:3]] * keep) / 3
  np.testing.assert_allclose(float(aux['loss_x']), loss_x, rtol=1e-5)
  np.testing.assert_allclose(float(aux['loss_u']), loss_u, rtol=1e-5)
  np.testing.assert_allclose(float(loss), loss_x + 2.0 * loss_u, rtol=1e-5)
  np.testing.assert_allclose(float(aux['mask_rate']), 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(float(aux['threshold_min']), 0.65, rtol=1e-6)
  np.testing.assert_allclose(float(aux['rho']), rho, rtol=1e-6)
  want_conf, want_pred = CONF.copy(), PRED.copy()
  want_conf[index[:3]], want_pred[index[:3]] = conf[:3], pred[:3]
  np.testing.assert_allclose(np.asarray(new['conf']), want_conf, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(new['pred']), want_pred)
  np.testing.assert_allclose(float(aux['seen_frac']), (want_pred >= 0).mean())


def test_sharded_equals_single_device_with_a_seen_state():
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (tests/conftest.py)')
  rng = np.random.default_rng(4)
  b, m, n, c = 16, 32, 64, 5
  mask_x, mask_u = np.ones(b), np.ones(m)
  mask_x[[2, 15]], mask_u[[0, 9, 30, 31]] = 0, 0
  batch = dict(logits_x=_f32(rng.normal(size=(b, c)) * 2),
               labels_x=_f32(rng.dirichlet(np.ones(c), size=b)), mask_x=_f32(mask_x),
               logits_uw=_f32(rng.normal(size=(m, c)) * 3), logits_us=_f32(rng.normal(size=(m, c))),
               mask_u=_f32(mask_u), index_u=jnp.asarray(rng.permutation(n)[:m], jnp.int32))
  pred = rng.integers(-1, c, size=n)
  state = {'conf': _f32(rng.uniform(0.3, 1.0, size=n) * (pred >= 0)),
           'pred': jnp.asarray(pred, jnp.int32)}
  fn = jax.jit(functools.partial(adsh.loss, tau=0.7))
  dev0 = jax.devices()[0]
  single = fn(**jax.device_put(batch, dev0), state=jax.device_put(state, dev0))
  mesh = sharding.make_mesh(0)
  sharded = fn(**jax.device_put(batch, sharding.data_sharded(mesh)),
               state=jax.device_put(state, sharding.replicated(mesh)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.device_get(sharded), jax.device_get(single))
  assert 0 < float(single[1]['mask_rate']) < 1 and float(single[1]['threshold_min']) < 0.7


def test_bad_input_is_one_clear_error():
  with pytest.raises(UserError, match=r'adsh majority=3 must be a class in \[0, 3\)') as e:
    adsh.init_state(num_classes=3, num_unlabelled=4, majority=3)
  assert '\n' not in str(e.value)
  with pytest.raises(UserError, match='adsh keeps a per-example state'):
    adsh.loss(logits_x=_f32(np.zeros((1, 3))), labels_x=_f32(np.eye(3)[:1]), mask_x=_f32([1.0]),
              logits_uw=_f32(np.zeros((1, 3))), logits_us=_f32(np.zeros((1, 3))),
              mask_u=_f32([1.0]))


# --- the long-tailed split ------------------------------------------------------------------

def _balanced(n_per=300, num_classes=4):
  rng = np.random.default_rng(0)
  n = n_per * num_classes
  ids = rng.permutation(10 * n)[:n].astype(np.int64)
  ex = {'id': ids, 'label': np.repeat(np.arange(num_classes), n_per).astype(np.int64),
        'x': rng.random((n, 3)).astype(np.float32)}
  test = {'id': np.arange(10 * n, 10 * n + 40, dtype=np.int64),
          'label': np.arange(40, dtype=np.int64) % num_classes, 'x': np.zeros((40, 3), np.float32)}
  return base.Dataset('toy', num_classes, [str(c) for c in range(num_classes)], 'vector',
                      {'train': ex, 'test': test})


def test_long_tailed_counts_by_hand():
  # CIFAR-10-LT: 1500 labelled at the head, gamma 100: 1500 * 100^(-c/9)
  want = [int(np.floor(1500 * 100 ** (-c / 9) + 1e-9)) for c in range(10)]
  got = splits.long_tailed_counts(1500, 100, 10).tolist()
  assert got == want and got[0] == 1500 and got[-1] == 15  # 1500 / 100 exactly, not 14
  assert got == [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]  # DARP / USB CIFAR-10-LT
  assert splits.long_tailed_counts(40, 1, 3).tolist() == [40, 40, 40]  # gamma 1: balanced
  assert splits.long_tailed_counts(2, 100, 3).tolist() == [2, 1, 1]  # never below 1


def test_long_tailed_split_counts_disjoint_and_seeded():
  ds = _balanced()
  out = splits.labelled_unlabelled(ds, seed=0, per_class=40, imbalance=10,
                                   unlabelled_per_class=200).splits
  lab, unl = out['labelled'], out['unlabelled']
  assert np.bincount(lab['label']).tolist() == [40, 18, 8, 4]  # 40 * 10^(-c/3)
  assert np.bincount(unl['label']).tolist() == [200, 92, 43, 20]
  assert not set(lab['id'].tolist()) & set(unl['id'].tolist())
  assert len(out['test']['id']) == 40  # test as it was (balanced)
  again = splits.labelled_unlabelled(ds, seed=0, per_class=40, imbalance=10,
                                     unlabelled_per_class=200).splits
  other = splits.labelled_unlabelled(ds, seed=1, per_class=40, imbalance=10,
                                     unlabelled_per_class=200).splits
  np.testing.assert_array_equal(again['unlabelled']['id'], unl['id'])
  assert set(other['labelled']['id'].tolist()) != set(lab['id'].tolist())
  # L is the balanced draw's head: the first N_c of each class in the same hash order
  bal = splits.labelled_unlabelled(ds, seed=0, per_class=40).splits['labelled']
  for c in range(4):
    first = np.sort(bal['id'][bal['label'] == c])
    assert set(lab['id'][lab['label'] == c].tolist()) <= set(first.tolist())
  # default M_max: the largest head every class follows (class 3 has 300 - 4 = 296 left)
  auto = splits.labelled_unlabelled(ds, seed=0, per_class=40, imbalance=10, imbalance_u=2).splits
  m_max = int(min(np.floor((300 - np.array([40, 18, 8, 4])) / 2.0 ** -(np.arange(4) / 3)
                           + 1e-9)))
  assert m_max == 260 and np.bincount(auto['unlabelled']['label']).tolist() == [260, 206, 163, 130]


@pytest.mark.parametrize('kwargs, message', [
    (dict(imbalance=0.5), r'labels.imbalance=0.5 must be a number >= 1'),
    (dict(imbalance=True), r'labels.imbalance=True must be a number >= 1'),
    (dict(imbalance=float('nan')), r'labels.imbalance=nan must be a number >= 1'),
    (dict(imbalance=10, imbalance_u=-3), r'labels.imbalance_u=-3 must be a number >= 1'),
    (dict(imbalance=10, max_unlabelled=50), r'drop max_unlabelled \(use unlabelled_per_class\)'),
    (dict(imbalance=10, unlabelled_per_class=0), r'unlabelled_per_class=0 must be an int >= 1'),
    (dict(imbalance=10, unlabelled_per_class=290),
     r'asks 290 unlabelled rows of class 0 .*which has 260 left after L; use unlabelled_per_'
     r'class <= 260'),
    (dict(per_class=300, imbalance=10), r'puts 300 labels on class 0'),
])
def test_long_tailed_bad_input_is_one_clear_error(kwargs, message):
  kwargs = {'per_class': 40, **kwargs}
  with pytest.raises(UserError, match=message) as e:
    splits.labelled_unlabelled(_balanced(), seed=0, **kwargs)
  assert '\n' not in str(e.value)


# --- the step inside train.fit ---------------------------------------------------------------

def test_resume_continues_the_threshold_state_exactly(tmp_path):
  ds = registry.build('datasets', dict(name='digits'))
  tr = pipeline.one_hot_labels({k: ds.split('train')[k] for k in ('id', 'label', 'x')}, 10)
  lab, unl = {k: v[:64] for k, v in tr.items()}, {k: v[64:160] for k, v in tr.items()}
  cfg = dict(loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=3e-3),
             batch_size=16, num_steps=6, ssl=dict(name='adsh', tau=0.3), unlabelled_ratio=2,
             checkpoint_every=3, log_every=3)
  model = lambda: registry.build('models', dict(name='mlp', hidden=(32,)), num_classes=10)
  run = lambda: train.fit(model(), lab, cfg=cfg, workdir=str(tmp_path),
                          mesh=sharding.make_mesh(8), unlabelled=unl)
  straight, _ = run()
  assert (np.asarray(straight.extra['ssl']['pred']) >= 0).all()  # 6 steps of 32: U seen twice
  shutil.rmtree(tmp_path / 'checkpoints' / '6')  # as if it died after step 3's save
  resumed, _ = run()
  assert int(resumed.step) == 6
  numeric.assert_same_state(straight, resumed)


def test_protocol_runs_a_long_tailed_split_and_records_the_counts(tmp_path):
  from ml_collections import ConfigDict
  config = ConfigDict(dict(
      protocol=dict(name='semi_supervised'), dataset=dict(name='digits'), seeds=(0,),
      labels=dict(per_class=8, imbalance=4, unlabelled_per_class=40, max_test=64),
      model=dict(model=dict(name='mlp', hidden=(16,)), loss=dict(name='xent'),
                 train=dict(optimizer=dict(name='adam', learning_rate=1e-3), batch_size=8,
                            num_steps=2, ssl=dict(name='adsh'), unlabelled_ratio=2)),
      eval_batch_size=64, mesh=dict(num_devices=1)))
  rec = train.train_and_evaluate(config, str(tmp_path))['per_seed'][0]
  assert rec['labelled_per_class'] == [8, 6, 5, 5, 4, 3, 3, 2, 2, 2]  # 8 * 4^(-c/9)
  assert rec['unlabelled_per_class'] == [40, 34, 29, 25, 21, 18, 15, 13, 11, 10]
  assert rec['n_unlabelled'] == 216 and 0 <= rec['acc'] <= 1


def test_protocol_check_refuses_a_labelled_set_smaller_than_a_batch():
  from ml_collections import ConfigDict
  from w2s.protocols import semi_supervised

  def config(gamma):
    return ConfigDict(dict(
        protocol=dict(name='semi_supervised'), dataset=dict(name='digits'), seeds=(0,),
        labels=dict(per_class=4, imbalance=gamma),
        model=dict(model=dict(name='mlp', hidden=(16,)), loss=dict(name='xent'),
                   train=dict(optimizer=dict(name='adam', learning_rate=1e-3), batch_size=24,
                              num_steps=2, ssl=dict(name='adsh'), unlabelled_ratio=2)),
        eval_batch_size=64, mesh=dict(num_devices=1)))

  # |L| = 4 + 3 + 2 + 7 * 1 = 16 (floor(4 * 10^(-c/9)), at least 1)
  with pytest.raises(UserError, match=r'the labelled set has 16 rows, fewer than one batch of '
                                      r'24; lower model.train.batch_size to at most 16') as e:
    semi_supervised.check(config(10))
  assert '\n' not in str(e.value)
  with pytest.raises(UserError, match=r'labels.imbalance=0.5 must be a number >= 1'):
    semi_supervised.check(config(0.5))
