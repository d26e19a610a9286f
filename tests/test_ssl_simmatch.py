"""SimMatch (w2s/ssl/simmatch.py) and its projection head (w2s/ssl_heads.py).

Reference numbers come from plain numpy in float64, written from the paper's formulas (USB's
order: the loss uses the bank before this step's update); the losses run under jax.jit. The
gradient check compares jax.grad of the whole loss through a tiny CNN with the vector-Jacobian
product of the hand-written cotangents (CE on x_l, masked soft CE on A(x_u), the instance term on
A(x_u)'s embedding): nothing flows through the weak view, the bank or the targets.
"""
import functools
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numeric  # tests/numeric.py
from w2s import registry, sharding, ssl_heads, ssl_step, train
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.ssl import simmatch

# B = 2 labelled rows, M = 3 unlabelled rows, C = 3 classes, a bank of K = 4 rows of D = 3.
LX = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
YX = np.array([[1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
LUW = np.log(np.array([[0.96, 0.02, 0.02], [0.03, 0.94, 0.03], [0.5, 0.3, 0.2]]))
LUS = np.array([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
_R = np.random.default_rng(0)
_unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
BANK = _unit(_R.normal(size=(4, 3)))
BANK_Y = np.array([0, 1, 2, 1])
FX, FUW, FUS = (_unit(_R.normal(size=(n, 3))) for n in (2, 3, 3))
INDEX_X = np.array([2, 0])
P_MODEL = np.array([0.5, 0.3, 0.2])
TAU = 0.8


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _log_softmax(z):
  return np.log(_softmax(z))


def _state(seen=(1, 1, 1, 1), bank=BANK, labels=BANK_Y):
  return {'bank': bank, 'labels': labels, 'seen': np.asarray(seen, np.float64),
          'p_model': P_MODEL, 'p_target': np.full(3, 1 / 3)}


def _f32(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.int32 if np.asarray(a).dtype.kind == 'i'
                                             else jnp.float32), tree)


def _args(padded=False):
  a = dict(logits_x=LX, labels_x=YX, mask_x=np.ones(2), logits_uw=LUW, logits_us=LUS,
           mask_u=np.ones(3), feats_x=FX, feats_uw=FUW, feats_us=FUS, index_x=INDEX_X)
  if padded:  # one padding row in each batch, with values that would change everything
    pad = lambda k, row: np.concatenate([a[k], np.asarray(row, np.float64)[None]])
    a = dict(logits_x=pad('logits_x', [9, -3, 5]), labels_x=pad('labels_x', [0, 0, 1]),
             mask_x=np.array([1.0, 1.0, 0.0]), logits_uw=pad('logits_uw', [-9, 9, 0]),
             logits_us=pad('logits_us', [-4, 4, 0]), mask_u=np.array([1.0, 1.0, 1.0, 0.0]),
             feats_x=pad('feats_x', [0, 1, 0]), feats_uw=pad('feats_uw', [1, 0, 0]),
             feats_us=pad('feats_us', [0, 0, 1]), index_x=np.array([2, 0, 1]))
  return a


@functools.lru_cache(maxsize=None)
def _jitted(hparams=()):
  return jax.jit(functools.partial(simmatch.loss, **dict(hparams)))


def _run(state=None, padded=False, **hparams):
  return _jitted(tuple(sorted(hparams.items())))(**_f32(_args(padded)),
                                                  state=_f32(state or _state()))


def _by_hand(seen=(1, 1, 1, 1), tau=TAU, T=0.1, alpha=0.9, m=0.7):
  """(loss, loss_x, loss_u, loss_in, keep [M], new bank, new labels, new p_model)."""
  pu = _softmax(LUW)
  p_model = 0.999 * P_MODEL + 0.001 * pu.mean(0)
  p = pu * (1 / 3 + 1e-6) / (p_model + 1e-6)
  p = p / p.sum(-1, keepdims=True)
  q = _softmax(FUW @ BANK.T / T)
  unfolded = q * p[:, BANK_Y]
  unfolded = unfolded / unfolded.sum(-1, keepdims=True)
  votes = q @ np.eye(3)[BANK_Y]
  warm = min(seen) > 0
  target = alpha * p + (1 - alpha) * votes if warm else p
  keep = target.max(-1) >= tau
  loss_u = np.mean(keep * -(target * _log_softmax(LUS)).sum(-1))
  loss_in = np.mean(-(unfolded * _log_softmax(FUS @ BANK.T / T)).sum(-1)) if warm else 0.0
  loss_x = np.mean(-(YX * _log_softmax(LX)).sum(-1))
  bank, labels = BANK.copy(), BANK_Y.copy()
  for j, i in enumerate(INDEX_X):
    bank[i] = _unit(m * BANK[i] + (1 - m) * FX[j])
    labels[i] = np.argmax(YX[j])
  return loss_x + loss_u + loss_in, loss_x, loss_u, loss_in, keep, bank, labels, p_model


def _close(got, want, rtol=1e-5, atol=0.0):
  np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol)


def test_registered_listed_and_declares_its_head():
  from w2s import main
  assert 'simmatch' in registry.known('ssl') and simmatch.PROJECTION == 128
  assert 'simmatch' in main._plugin_list()


def test_loss_terms_mask_and_bank_by_hand():
  total, loss_x, loss_u, loss_in, keep, bank, labels, p_model = _by_hand()
  assert 0 < keep.sum() < 3  # the threshold has teeth: some rows pass, some do not
  loss, aux, new = _run(tau=TAU)
  _close(loss, total)
  _close(aux['loss_x'], loss_x)
  _close(aux['loss_u'], loss_u)
  _close(aux['loss_in'], loss_in)
  _close(aux['mask_rate'], keep.mean())
  _close(new['bank'], bank, atol=1e-7)
  np.testing.assert_array_equal(new['labels'], labels)
  _close(new['p_model'], p_model)
  _close(np.linalg.norm(np.asarray(new['bank']), axis=-1), np.ones(4))
  _close(aux['bank_seen'], 1.0)


def test_until_every_slot_is_written_no_instance_term_nor_smoothing():
  total, _, loss_u, loss_in, keep, bank, labels, _ = _by_hand(seen=(1, 0, 1, 1))
  assert loss_in == 0.0
  loss, aux, new = _run(state=_state(seen=(1, 0, 1, 1)), tau=TAU)
  _close(loss, total)
  _close(aux['loss_u'], loss_u)
  assert float(aux['loss_in']) == 0.0
  _close(aux['mask_rate'], keep.mean())
  _close(aux['bank_seen'], 0.75)  # slots 0 and 2 written now, 1 still not
  np.testing.assert_array_equal(new['seen'], [1, 0, 1, 1])
  _close(new['bank'], bank, atol=1e-7)


def test_padding_never_changes_anything():
  chex.assert_trees_all_close(_run(padded=True, tau=TAU), _run(tau=TAU), rtol=1e-6)


def test_gradient_by_hand_on_the_embeddings_and_logits():
  """d/d logits_us = lambda_u keep (softmax - p^) / M (tau 0: all kept); d/d feats_us =
  lambda_in (q^s - q^) K / (T M); nothing through the weak view, the labelled embedding or the
  bank. (Uniform p* cancels in the alignment's normalisation.)"""
  pu = _softmax(LUW)
  p_model = 0.999 * P_MODEL + 0.001 * pu.mean(0)
  p = pu / (p_model + 1e-6)
  p = p / p.sum(-1, keepdims=True)
  q = _softmax(FUW @ BANK.T / 0.1)
  unfolded = q * p[:, BANK_Y]
  unfolded /= unfolded.sum(-1, keepdims=True)
  target = 0.9 * p + 0.1 * q @ np.eye(3)[BANK_Y]
  a = _f32(_args())

  def total(z_us, f_us, z_uw, f_uw, f_x):
    return simmatch.loss(**{**a, 'logits_us': z_us, 'feats_us': f_us, 'logits_uw': z_uw,
                            'feats_uw': f_uw, 'feats_x': f_x}, state=_f32(_state()), tau=0.0,
                         lambda_u=2.0, lambda_in=0.5)[0]
  g = jax.jit(jax.grad(total, argnums=range(5)))(a['logits_us'], a['feats_us'], a['logits_uw'],
                                                  a['feats_uw'], a['feats_x'])
  _close(g[0], 2.0 * (_softmax(LUS) - target) / 3, rtol=1e-4, atol=1e-7)
  _close(g[1], 0.5 * (_softmax(FUS @ BANK.T / 0.1) - unfolded) @ BANK / (0.1 * 3), rtol=1e-4,
         atol=1e-6)
  for zero in g[2:]:
    assert float(jnp.abs(zero).max()) == 0.0


def test_sharded_loss_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (tests/conftest.py)')
  rng = np.random.default_rng(1)
  b, m, c, k, d = 16, 32, 5, 64, 128
  mask_x, mask_u = np.ones(b), np.ones(m)
  mask_x[[2, 15]], mask_u[[0, 9, 30, 31]] = 0, 0
  batch = _f32(dict(
      logits_x=rng.normal(size=(b, c)) * 2, labels_x=np.eye(c)[rng.integers(0, c, b)],
      mask_x=mask_x, logits_uw=rng.normal(size=(m, c)) * 3, logits_us=rng.normal(size=(m, c)),
      mask_u=mask_u, feats_x=_unit(rng.normal(size=(b, d))),
      feats_uw=_unit(rng.normal(size=(m, d))), feats_us=_unit(rng.normal(size=(m, d))),
      index_x=rng.permutation(k)[:b].astype(np.int32)))
  state = _f32({'bank': _unit(rng.normal(size=(k, d))), 'labels': rng.integers(0, c, k),
                'seen': np.ones(k), 'p_model': rng.dirichlet(np.ones(c)),
                'p_target': np.full(c, 1 / c)})
  fn = jax.jit(functools.partial(simmatch.loss, tau=0.5))
  dev0 = jax.devices()[0]
  single = fn(**jax.device_put(batch, dev0), state=jax.device_put(state, dev0))
  mesh = sharding.make_mesh(0)
  sharded_batch = jax.device_put(batch, sharding.data_sharded(mesh))
  assert len(sharded_batch['feats_us'].sharding.device_set) == 8
  sharded = fn(**sharded_batch, state=jax.device_put(state, sharding.replicated(mesh)))
  chex.assert_trees_all_close(jax.device_get(sharded), jax.device_get(single), rtol=1e-5,
                              atol=1e-7)
  written = np.any(np.asarray(sharded[2]['bank']) != np.asarray(state['bank']), axis=-1)
  assert written.sum() == 14  # the real labelled rows, not the 2 padding ones
  assert 0.0 < float(sharded[1]['mask_rate']) < 1.0


# --- the projection head on a tiny CNN -------------------------------------------------------

def _cnn(num_classes=3):
  return registry.build('models', dict(name='cnn', size='small', widths=(4,), hidden=16,
                                       image_shape=(8, 8, 1)), num_classes=num_classes)


def test_head_by_hand_one_pass_and_gradients_into_head_and_backbone():
  """The embedding is the head's formula on the model's own features, the logits of the same
  pass are the model's, and jax.grad equals the VJP of the hand cotangents."""
  module, embed = _cnn(), ssl_heads.embed_fn(_cnn(), 128)
  rng = np.random.default_rng(2)
  xl, uw, us = ({'x': jnp.asarray(rng.random((n, 64)), jnp.float32)} for n in (2, 3, 3))
  params = module.init(jax.random.PRNGKey(0), xl)['params']
  params = ssl_heads.init_params(module, params, xl, jax.random.PRNGKey(1), 128)
  params = jax.tree.map(lambda v: v + 0.3 * jax.random.normal(jax.random.PRNGKey(3), v.shape),
                        params)  # the zero-initialised head would give uniform logits
  state = {'bank': _unit(rng.normal(size=(6, 128))), 'labels': rng.integers(0, 3, 6),
           'seen': np.ones(6), 'p_model': P_MODEL, 'p_target': np.full(3, 1 / 3)}
  state = _f32(state)
  run = lambda p, b: embed(p, b, train=True, rng=None)

  def total(p):
    (lx, fx), (luw, fuw), (lus, fus) = run(p, xl), run(p, uw), run(p, us)
    return simmatch.loss(logits_x=lx, labels_x=_f32(YX), mask_x=jnp.ones(2), logits_uw=luw,
                         logits_us=lus, mask_u=jnp.ones(3), feats_x=fx, feats_uw=fuw,
                         feats_us=fus, index_x=jnp.array([4, 1]), state=state, tau=0.0)[0]
  grads, outs = jax.jit(lambda p: (jax.grad(total)(p), (run(p, xl), run(p, uw), run(p, us))))(
      params)
  # the hand cotangents on the outputs, from the forward values in float64
  (lx, _), (luw, fuw), (lus, fus) = jax.tree.map(lambda v: np.asarray(v, np.float64), outs)
  _close(lus, module.apply({'params': params}, us), rtol=1e-5, atol=1e-6)  # extra key ignored
  h = np.asarray(module.apply({'params': params}, us, method='features'), np.float64)
  pr = jax.tree.map(lambda v: np.asarray(v, np.float64), params[ssl_heads.KEY])
  z = np.maximum(h @ pr['hidden']['kernel'] + pr['hidden']['bias'], 0)
  _close(fus, _unit(z @ pr['out']['kernel'] + pr['out']['bias']), rtol=1e-4, atol=1e-6)
  assert fus.shape == (3, 128) and np.abs(lus).max() > 0.1  # a trained-looking head, not zeros
  bank, ys = np.asarray(state['bank'], np.float64), np.asarray(state['labels'])
  pu = _softmax(luw)
  p = pu / (0.999 * P_MODEL + 0.001 * pu.mean(0) + 1e-6)
  p /= p.sum(-1, keepdims=True)
  q = _softmax(fuw @ bank.T / 0.1)
  unfolded = q * p[:, ys]
  unfolded /= unfolded.sum(-1, keepdims=True)
  target = 0.9 * p + 0.1 * q @ np.eye(3)[ys]
  g_lx = (_softmax(lx) - YX) / 2
  g_lus = (_softmax(lus) - target) / 3
  g_fus = (_softmax(fus @ bank.T / 0.1) - unfolded) @ bank / (0.1 * 3)

  @jax.jit
  def chain(p, g_lx, g_lus, g_fus):  # params' cotangent: the VJPs of the two trained passes
    _, vjp_x = jax.vjp(lambda p: run(p, xl), p)
    _, vjp_us = jax.vjp(lambda p: run(p, us), p)
    return jax.tree.map(lambda a, b: a + b, vjp_x((g_lx, jnp.zeros((2, 128))))[0],
                        vjp_us((g_lus, g_fus))[0])
  want = chain(params, _f32(g_lx), _f32(g_lus), _f32(g_fus))
  chex.assert_trees_all_close(grads, want, rtol=2e-4, atol=2e-6)
  for path in (('ssl_projection', 'out', 'kernel'), ('ssl_projection', 'hidden', 'kernel'),
               ('conv0', 'kernel'), ('head', 'kernel')):
    assert float(jnp.abs(functools.reduce(lambda t, k: t[k], path, grads)).max()) > 1e-5, path


# --- the step inside train.fit ---------------------------------------------------------------

@pytest.fixture(scope='module')
def digits():
  ds = registry.build('datasets', dict(name='digits'))
  tr = pipeline.one_hot_labels({k: ds.split('train')[k] for k in ('id', 'label', 'x')}, 10)
  return {k: v[:32] for k, v in tr.items()}, {k: v[32:96] for k, v in tr.items()}


def _cfg(**ssl):
  return dict(loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=3e-3),
              batch_size=16, num_steps=6, ssl=dict(name='simmatch', tau=0.3, **ssl),
              unlabelled_ratio=2, checkpoint_every=3, log_every=3)


def _fit(digits, workdir, mesh, model=None):
  lab, unl = digits
  return train.fit(model or _cnn(10), lab, cfg=_cfg(), workdir=str(workdir), mesh=mesh,
                   unlabelled=unl)


@pytest.fixture(scope='module')
def straight(digits, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('simmatch_straight')
  state, last = _fit(digits, workdir, sharding.make_mesh(1))
  return workdir, state, last


def test_fit_fills_the_bank_and_logs_its_terms(digits, straight):
  _, state, last = straight
  lab, _ = digits  # 32 rows, batches of 16: every slot is written in the first 2 of 6 steps
  ssl = state.extra['ssl']
  np.testing.assert_array_equal(ssl['seen'], np.ones(32))
  np.testing.assert_array_equal(ssl['labels'], np.argmax(lab['label'], -1))
  _close(np.linalg.norm(np.asarray(ssl['bank']), axis=-1), np.ones(32), rtol=1e-5)
  assert ssl_heads.KEY in state.params and float(last['loss_in']) > 0.0
  assert 0.0 <= float(last['mask_rate']) <= 1.0


def test_eight_devices_match_one(digits, straight, tmp_path):
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (tests/conftest.py)')
  _, one, _ = straight
  eight, _ = _fit(digits, tmp_path, sharding.make_mesh(8))
  # Adam divides by sqrt(v): a reduction-order difference of ~1e-7 in a small gradient
  # becomes ~1e-5 of a param after 6 steps
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                       atol=1e-5),
               (one.params, one.extra), (eight.params, eight.extra))


def test_resume_continues_the_bank_exactly(digits, straight, tmp_path):
  workdir, state, _ = straight
  shutil.copytree(workdir, tmp_path / 'b')
  shutil.rmtree(tmp_path / 'b' / 'checkpoints' / '6')  # as if it died after step 3's save
  resumed, _ = _fit(digits, tmp_path / 'b', sharding.make_mesh(1))
  assert int(resumed.step) == 6
  numeric.assert_same_state(state, resumed)


def test_model_without_features_is_one_clear_error(digits, tmp_path):
  mlp = registry.build('models', dict(name='mlp', hidden=(8,)), num_classes=10)
  with pytest.raises(UserError, match='pooled features.*cnn, resnet'):
    _fit(digits, tmp_path, sharding.make_mesh(1), model=mlp)
  from w2s.configs import ssl as ssl_config
  from w2s.protocols import semi_supervised
  config = ssl_config.get_config('runlocal,algo=simmatch,seeds=1')
  config.model.model = dict(name='mlp', hidden=(8,))
  with pytest.raises(UserError, match='pooled features.*cnn, resnet'):  # --dry_run's check
    semi_supervised.check(config)
  with pytest.raises(UserError, match='num_labelled'):
    simmatch.init_state(num_classes=3)
  with pytest.raises(UserError, match='feats_x'):
    simmatch.loss(**{**_f32(_args()), 'feats_us': None}, state=_f32(_state()))


def test_other_algorithms_get_no_head():
  opts = train.options.TrainOptions.coerce({**_cfg(), 'ssl': dict(name='fixmatch')})
  params = {'head': {'kernel': jnp.zeros((2, 2))}}
  assert ssl_step.projection(opts) == 0
  assert ssl_step.init_params(opts, None, params, {}, None) is params
  step = ssl_step.make_step(opts, apply_fn=None, tx=None, schedule=None, total_steps=1)
  assert 'embed_fn' not in step.keywords


@pytest.mark.slow
def test_runlocal_config_end_to_end(tmp_path):
  from w2s.configs import ssl as ssl_config
  results = train.train_and_evaluate(ssl_config.get_config('runlocal,algo=simmatch,seeds=1'),
                                     str(tmp_path))
  rec = results['per_seed'][0]
  assert rec['n_labelled'] == 40 and 0.0 <= rec['acc'] <= 1.0
  assert 0.0 <= rec['mask_rate'] <= 1.0
