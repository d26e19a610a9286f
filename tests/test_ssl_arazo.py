"""Arazo et al. 2020 (w2s/ssl/arazo.py): soft pseudo-labels, MixUp, R_A and R_H by hand.

Reference numbers are plain numpy in float64 from the paper's equations, on a linear model
z = W x + b; MixUp's draw (lambda', pairing) is taken from the module's documented key split and
treated as given. The loss runs under jax.jit. Then the step inside `train.fit`: 1 vs 8 devices
and an exact resume of the soft labels.
"""
import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numeric  # tests/numeric.py

from w2s import registry, sharding, train
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.ssl import ALGORITHMS, arazo, mixup

B, M, C, D, N = 2, 3, 3, 4, 10
_r = np.random.default_rng(0)
W0, B0 = _r.normal(size=(C, D)), _r.normal(size=C) * 0.5
X = _r.normal(size=(B, D))
YX = np.array([[1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
U = _r.normal(size=(M, D))
SHIFT = _r.normal(size=D) * 0.3  # the weak view of U: U + SHIFT
INDEX = np.array([4, 0, 7])
SOFT = np.zeros((N, C))
SOFT[4], SOFT[7], SOFT[2] = [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]  # row 0: unseen
COUNT = np.array([2.0, 1.0, 1.0])  # prior='labelled': labels seen before this batch
RNG = jax.random.PRNGKey(3)
TOTAL = 1000


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _f32(a):
  return jnp.asarray(a, jnp.float32)


def _args(x=X, y=YX, u=U, index=INDEX, mask_x=None, mask_u=None):
  uj = _f32(u)
  return dict(x={'x': _f32(x)}, labels_x=_f32(y),
              mask_x=_f32(np.ones(len(x)) if mask_x is None else mask_x),
              u_view=lambda kind, k: {'x': uj + _f32(SHIFT)[None]},
              mask_u=_f32(np.ones(len(u)) if mask_u is None else mask_u), rng=RNG,
              index_u=jnp.asarray(index, jnp.int32))


def _padded_args():
  """One padding row per batch, with values that would change everything (index 0 is real)."""
  return _args(x=np.vstack([X, np.full(D, 9.0)]), y=np.vstack([YX, np.zeros(C)]),
               u=np.vstack([U, np.linspace(-7, 7, D)]), index=np.append(INDEX, 0),
               mask_x=np.array([1.0, 1.0, 0.0]), mask_u=np.array([1.0, 1.0, 1.0, 0.0]))


_ARGS = {False: _args(), True: _padded_args()}


def _apply(W, b):
  return lambda inputs, key: inputs['x'] @ W.T + b


@functools.lru_cache(maxsize=None)
def _jitted(hparams, padded):
  return jax.jit(functools.partial(arazo.loss, apply=_apply(_f32(W0), _f32(B0)),
                                   u_view=_ARGS[padded]['u_view'], total_steps=TOTAL,
                                   **dict(hparams)))


def _state(prior='uniform'):
  s = {'soft_labels': _f32(SOFT)}
  return {**s, 'label_count': _f32(COUNT)} if prior == 'labelled' else s


def _run(step=50, padded=False, **hparams):
  args = {k: v for k, v in _ARGS[padded].items() if k != 'u_view'}
  return _jitted(tuple(sorted(hparams.items())), padded)(
      **args, state=_state(hparams.get('prior', 'uniform')), step=jnp.int32(step))


_draw = jax.jit(mixup.draw, static_argnums=2)  # eager Beta sampling compiles op by op: slow


def _by_hand(W=W0, b=B0, prior='uniform', warm=True, t_u=None, alpha=1.0):
  """(loss, aux dict, new soft labels, pi, t_u) of eqs. 1-4 in float64."""
  f = lambda a: a @ W.T + b
  weak = U + SHIFT
  p_now = _softmax(f(weak))
  if t_u is None:
    t_u = np.where(SOFT[INDEX].sum(-1, keepdims=True) > 0, SOFT[INDEX], p_now)
  pi = np.full(C, 1 / C) if prior == 'uniform' else (COUNT + YX.sum(0)) / (COUNT + YX.sum(0)).sum()
  k_mix, _ = jax.random.split(RNG)
  mask_u = jnp.ones(M) if warm else jnp.zeros(M)
  lam, perm = _draw(k_mix, [jnp.ones(B), mask_u], alpha)
  lam, perm = float(lam), np.asarray(perm)
  inputs, targets = np.concatenate([X, weak]), np.concatenate([YX, t_u])
  z = f(lam * inputs + (1 - lam) * inputs[perm])
  t = lam * targets + (1 - lam) * targets[perm]
  real = np.arange(B + M) < (B + M if warm else B)
  logp = np.log(_softmax(z))
  ce = -(t * logp).sum(-1)
  h = np.exp(logp[real])
  hbar = h.mean(0)
  r_a = np.sum(pi * np.log(pi / hbar))
  r_h = -(h * logp[real]).sum(-1).mean()
  loss = ce[real].mean() + 0.8 * r_a + 0.4 * r_h
  soft = SOFT.copy()
  soft[INDEX] = p_now
  aux = {'loss_x': ce[:B].mean(), 'loss_u': ce[B:].mean() if warm else 0.0, 'reg_a': r_a,
         'reg_h': r_h, 'mix_lambda': lam}
  return loss, aux, soft, pi, t_u, perm


def _close(got, want, rtol=1e-5, atol=0.0):
  np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol)


def test_registered_input_level_with_state():
  assert 'arazo' in ALGORITHMS and 'arazo' in registry.known('ssl')
  assert arazo.INPUT_LEVEL and not arazo.NEEDS_TEACHER
  s = arazo.init_state(num_classes=C, num_unlabelled=N)
  assert set(s) == {'soft_labels'} and s['soft_labels'].shape == (N, C)
  assert s['soft_labels'].dtype == jnp.float32 and float(jnp.abs(s['soft_labels']).max()) == 0
  s = arazo.init_state(num_classes=C, num_unlabelled=N, prior='labelled', alpha=1.0)
  assert s['label_count'].shape == (C,)


@pytest.mark.parametrize('prior', ['uniform', 'labelled'])
def test_values_by_hand(prior):
  loss, aux, new, logits_x, logits_uw = _run(prior=prior)
  want, want_aux, soft, pi, _, perm = _by_hand(prior=prior)
  assert sorted(perm) == list(range(B + M)) and 0.5 <= want_aux['mix_lambda'] <= 1.0
  for k, v in want_aux.items():
    _close(aux[k], v, rtol=2e-5)
  _close(loss, want, rtol=2e-5)
  _close(new['soft_labels'], soft, rtol=1e-5, atol=1e-7)  # rows 4, 0, 7 refreshed, 2 kept
  _close(aux['warm'], 1.0)
  _close(aux['seen_frac'], 4 / N)  # rows 0, 2, 4, 7
  if prior == 'labelled':
    _close(new['label_count'], COUNT + YX.sum(0), rtol=1e-6)
    assert abs(pi[0] - 1 / C) > 0.05  # the prior is not the uniform one (teeth)
  _close(logits_x, X @ W0.T + B0, rtol=1e-5, atol=1e-6)
  _close(logits_uw, (U + SHIFT) @ W0.T + B0, rtol=1e-5, atol=1e-6)


def test_regularisers_by_hand():
  z = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 3.0, 0.5], [5.0, 5.0, 5.0]])
  mask = np.array([1.0, 1.0, 1.0, 0.0])
  pi = np.array([0.5, 0.3, 0.2])
  r_a, r_h = jax.jit(arazo.regularisers)(_f32(z), _f32(mask), _f32(pi))
  h = _softmax(z[:3])
  _close(r_a, np.sum(pi * np.log(pi / h.mean(0))), rtol=1e-5)
  _close(r_h, -np.sum(h * np.log(h), -1).mean(), rtol=1e-5)
  # a zero prior entry counts 0 (0 log 0), not NaN
  r_a0, _ = arazo.regularisers(_f32(z), _f32(mask), _f32([0.6, 0.4, 0.0]))
  _close(r_a0, 0.6 * np.log(0.6 / h.mean(0)[0]) + 0.4 * np.log(0.4 / h.mean(0)[1]), rtol=1e-5)


def test_warmup_trains_on_labelled_rows_but_refreshes_the_labels():
  loss, aux, new, _, _ = _run(step=50, warmup=0.1)  # 50 < 0.1 * 1000: still warming up
  want, want_aux, soft, _, _, perm = _by_hand(warm=False)
  assert set(perm[:B]) == set(range(B))  # labelled rows were mixed among themselves
  _close(loss, want, rtol=2e-5)
  _close(aux['loss_u'], 0.0)
  _close(aux['warm'], 0.0)
  _close(new['soft_labels'], soft, rtol=1e-5, atol=1e-7)
  _close(_run(step=100, warmup=0.1)[1]['warm'], 1.0)  # from step 100 on, U is in


def test_gradient_treats_the_targets_as_constants():
  t_u = _by_hand()[4]  # row 0 (not seen yet) takes the current prediction: sg'd

  want = numeric.fd_grad(lambda W: _by_hand(W=W, t_u=t_u)[0], W0)
  got = jax.jit(jax.grad(lambda W: arazo.loss(
      **_args(), apply=_apply(W, _f32(B0)), state=_state(), step=jnp.int32(50),
      total_steps=TOTAL)[0]))(_f32(W0))
  _close(got, want, rtol=1e-3, atol=1e-5)
  live = numeric.fd_grad(lambda W: _by_hand(W=W)[0], W0)
  assert np.abs(live - want).max() > 1e-3  # the check has teeth


@pytest.mark.parametrize('prior', ['uniform', 'labelled'])
def test_padding_never_changes_anything(prior):
  base = _run(prior=prior)
  padded = _run(prior=prior, padded=True)
  trim = lambda out: (out[0], out[1], out[2], out[3][:B], out[4][:M])
  jax.tree.map(lambda a, b: _close(a, b, rtol=1e-5, atol=1e-7), trim(padded), base)


def test_bad_input_is_one_clear_error():
  with pytest.raises(UserError, match="arazo prior='flat' is not one of") as e:
    arazo.init_state(num_classes=C, num_unlabelled=N, prior='flat')
  assert '\n' not in str(e.value)
  with pytest.raises(UserError, match='arazo keeps a soft pseudo-label per row of U'):
    arazo.loss(**_args(), apply=_apply(_f32(W0), _f32(B0)), state=None, step=0,
               total_steps=TOTAL)
  with pytest.raises(UserError, match="'arazo' mixes or perturbs the model inputs"):
    arazo.loss(**{**_args(), 'x': {'x': jnp.zeros((B, D), jnp.int32)}},
               apply=_apply(_f32(W0), _f32(B0)), state=_state(), step=0, total_steps=TOTAL)


# --- the step inside train.fit ---------------------------------------------------------------

@pytest.fixture(scope='module')
def digits():
  ds = registry.build('datasets', dict(name='digits'))
  tr = pipeline.one_hot_labels({k: ds.split('train')[k] for k in ('id', 'label', 'x')}, 10)
  return {k: v[:64] for k, v in tr.items()}, {k: v[64:160] for k, v in tr.items()}


def _cfg(steps=6):
  return dict(loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=3e-3),
              batch_size=16, num_steps=steps, ssl=dict(name='arazo', prior='labelled'),
              unlabelled_ratio=2, checkpoint_every=3, log_every=3)


def _model():
  return registry.build('models', dict(name='mlp', hidden=(32,), dropout=0.1), num_classes=10)


def test_sharded_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (tests/conftest.py)')
  rng = np.random.default_rng(1)
  b, m, n = 16, 32, 64
  mask_x, mask_u = np.ones(b), np.ones(m)
  mask_x[[2, 15]], mask_u[[0, 9, 30, 31]] = 0, 0
  soft = rng.dirichlet(np.ones(C), size=n) * (rng.random(n) < 0.5)[:, None]  # half not seen
  u = _f32(rng.normal(size=(m, D)))
  batch = dict(x={'x': _f32(rng.normal(size=(b, D)))},
               labels_x=_f32(rng.dirichlet(np.ones(C), size=b)), mask_x=_f32(mask_x),
               mask_u=_f32(mask_u), index_u=jnp.asarray(rng.permutation(n)[:m], jnp.int32), u=u)
  state = {'soft_labels': _f32(soft), 'label_count': _f32([3.0, 1.0, 2.0])}

  def fn(batch, state):
    u = batch.pop('u')
    return arazo.loss(**batch, apply=_apply(_f32(W0), _f32(B0)), u_view=lambda kind, k: {'x': u},
                      rng=RNG, state=state, step=jnp.int32(5), total_steps=TOTAL,
                      prior='labelled')

  fn = jax.jit(fn)
  dev0 = jax.devices()[0]
  single = fn(jax.device_put(batch, dev0), jax.device_put(state, dev0))
  mesh = sharding.make_mesh(0)
  sharded_batch = jax.device_put(batch, sharding.data_sharded(mesh))
  assert len(sharded_batch['u'].sharding.device_set) == 8
  sharded = fn(sharded_batch, jax.device_put(state, sharding.replicated(mesh)))
  jax.tree.map(lambda a, b: _close(a, b, rtol=1e-5, atol=1e-7), jax.device_get(sharded),
               jax.device_get(single))
  written = np.asarray(sharded[2]['soft_labels']) != soft.astype(np.float32)  # rows written
  assert written.any(axis=1).sum() == 28


def test_resume_continues_the_soft_labels_exactly(digits, tmp_path):
  lab, unl = digits  # U: 96 rows = 3 batches of 32, so 6 steps see every row twice
  mesh = sharding.make_mesh(8)  # the step's scatter into the state under sharding
  run = lambda: train.fit(_model(), lab, cfg=_cfg(), workdir=str(tmp_path), mesh=mesh,
                          unlabelled=unl)
  straight, _ = run()
  soft = np.asarray(straight.extra['ssl']['soft_labels'])
  np.testing.assert_allclose(soft.sum(-1), np.ones(len(unl['id'])), rtol=1e-5)  # all seen
  np.testing.assert_allclose(np.asarray(straight.extra['ssl']['label_count']).sum(), 6 * 16,
                             rtol=1e-6)
  shutil.rmtree(tmp_path / 'checkpoints' / '6')  # as if it died after step 3's save
  resumed, _ = run()
  assert int(resumed.step) == 6
  numeric.assert_same_state(straight, resumed)
