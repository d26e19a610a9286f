"""w2s.ssl algorithms: hand-computed values, thresholds, stop-gradients, padding, state, sharding.

Reference numbers are computed here with plain numpy in float64 from each paper's formula,
never by calling w2s code; the losses run under jax.jit.
"""
import functools
import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s import registry, sharding
from w2s.errors import UserError
from w2s.ssl import (ALGORITHMS, doubly_robust, fixmatch, flexmatch, freematch, mean_teacher,
                     pi_model, pseudo_label, supervised, uda)

ALL = {name: importlib.import_module(f'w2s.ssl.{name}') for name in ALGORITHMS}
# the logit-level ones; input-level algorithms (INPUT_LEVEL: mixmatch, remixmatch, vat, arazo) take
# the student and the views instead of logits and are tested in tests/test_ssl_mix.py and
# tests/test_ssl_arazo.py; simmatch (PROJECTION: it also needs embeddings and a labelled bank) in
# tests/test_ssl_simmatch.py
MODULES = {name: mod for name, mod in ALL.items()
           if not getattr(mod, 'INPUT_LEVEL', False) and not getattr(mod, 'PROJECTION', 0)}

# B = 2 labelled rows, M = 3 unlabelled rows, C = 3 classes.
LX = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
YX = np.array([[1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
PW = np.array([[0.96, 0.02, 0.02], [0.03, 0.94, 0.03], [0.5, 0.3, 0.2]])  # q on the weak view
LUW = np.log(PW)
LUS = np.array([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
LUT = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.0]])
INDEX = np.array([4, 0, 7])
SELECTED = np.array([0, 0, 0, 1, -1, -1, -1, -1, -1, -1])  # sigma = [3, 1, 0], 6 unused
FM_STATE = {'tau': 0.95, 'p_model': np.array([0.5, 0.3, 0.2]),
            'label_hist': np.array([0.4, 0.4, 0.2])}


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _ce(z, y):
  return -np.sum(y * np.log(_softmax(z)), axis=-1)


def _sup():
  return _ce(LX, YX).mean()


def _f32(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.int32 if np.asarray(a).dtype.kind == 'i'
                                             else jnp.float32), tree)


def _inputs(**over):
  args = dict(logits_x=LX, labels_x=YX, mask_x=np.ones(2), logits_uw=LUW, logits_us=LUS,
              mask_u=np.ones(3), step=np.int32(50), state=None, index_u=INDEX, logits_ut=LUT)
  args.update(over)
  return _f32(args)


def _call(mod, total_steps=100, hparams=None, **over):
  fn = jax.jit(functools.partial(mod.loss, total_steps=total_steps, **(hparams or {})))
  return fn(**_inputs(**over))


def _close(got, want, rtol=1e-5):
  np.testing.assert_allclose(np.asarray(got), want, rtol=rtol)


def test_every_module_has_the_interface():
  assert set(ALGORITHMS) == set(registry.known('ssl'))  # a new module is listed, or it fails
  assert set(ALL) - set(MODULES) == {'mixmatch', 'remixmatch', 'vat', 'arazo', 'simmatch'}
  for name, mod in ALL.items():
    assert mod.NEEDS_TEACHER == (name == 'mean_teacher')
    assert callable(mod.loss)
  assert mean_teacher.EMA_DECAY == 0.999


def test_supervised():
  loss, aux, state = _call(supervised)
  _close(loss, _sup())
  assert float(aux['loss_u']) == 0.0 and state is None


def test_pseudo_label_threshold_and_ramp():
  loss, aux, _ = _call(pseudo_label)  # t = 0.5 >= t2 = 0.4: alpha = alpha_f = 3
  _close(aux['loss_u'], -np.log(0.96) / 3)  # only the 0.96 row passes tau 0.95
  _close(loss, _sup() + 3.0 * -np.log(0.96) / 3)
  _close(aux['mask_rate'], 1 / 3)
  _, aux, _ = _call(pseudo_label, step=np.int32(20), hparams=dict(tau=0.0, t1=0.1, t2=0.5))
  _close(aux['weight'], 3.0 * (0.2 - 0.1) / (0.5 - 0.1))  # Lee 2013 alpha(t)
  _close(aux['loss_u'], -np.log([0.96, 0.94, 0.5]).sum() / 3)  # tau 0: every row
  _, aux, _ = _call(pseudo_label, step=np.int32(5), hparams=dict(t1=0.1, t2=0.5))
  assert float(aux['weight']) == 0.0


def _mse(a_logits, b_logits):
  return ((_softmax(a_logits) - _softmax(b_logits)) ** 2).mean(-1).mean()


def test_pi_model_sigmoid_rampup():
  loss, aux, _ = _call(pi_model, step=np.int32(10))
  w = 10.0 * np.exp(-5.0 * (1.0 - 10 / (100 * 80 / 300)) ** 2)
  _close(aux['weight'], w)
  _close(aux['loss_u'], _mse(LUS, LUW))
  _close(loss, _sup() + w * _mse(LUS, LUW))
  _, aux, _ = _call(pi_model, step=np.int32(90))
  _close(aux['weight'], 10.0)


def test_mean_teacher_uses_the_teacher():
  loss, aux, _ = _call(mean_teacher, step=np.int32(10))
  w = 100.0 * np.exp(-5.0 * (1.0 - 10 / (100 * 40000 / 150000)) ** 2)
  _close(aux['loss_u'], _mse(LUS, LUT))
  _close(loss, _sup() + w * _mse(LUS, LUT))
  with pytest.raises(UserError, match='teacher'):
    mean_teacher.loss(**_inputs(logits_ut=None), total_steps=100)


def test_fixmatch_threshold():
  e = np.eye(3)
  loss, aux, _ = _call(fixmatch)
  # max q 0.94 < 0.95 contributes nothing, 0.96 does (Sohn et al. 2020)
  _close(aux['loss_u'], _ce(LUS[0], e[0]) / 3)
  _close(loss, _sup() + _ce(LUS[0], e[0]) / 3)
  _close(aux['mask_rate'], 1 / 3)
  _, aux, _ = _call(fixmatch, hparams=dict(tau=0.93))
  _close(aux['loss_u'], (_ce(LUS[0], e[0]) + _ce(LUS[1], e[1])) / 3)
  _, aux, _ = _call(fixmatch, hparams=dict(hard=False, T=0.5))
  sharp = PW[0] ** 2 / (PW[0] ** 2).sum()
  _close(aux['loss_u'], _ce(LUS[0], sharp) / 3)


def test_uda_values():
  loss, aux, _ = _call(uda)
  t = PW ** 2.5 / (PW ** 2.5).sum(-1, keepdims=True)  # sharpen(q, T = 0.4)
  kl = np.sum(t * (np.log(t) - np.log(_softmax(LUS))), axis=-1)
  want_u = (kl[0] + kl[1]) / 3  # max q 0.5 < beta 0.8 is masked
  _close(aux['loss_u'], want_u)
  _close(loss, _sup() + want_u)  # tsa 'none' keeps every labelled row
  _close(aux['mask_rate'], 2 / 3)


@pytest.mark.parametrize('schedule, step, eta', [
    ('exp', 1, np.exp(5 * (0.01 - 1))), ('exp', 99, np.exp(5 * (0.99 - 1))),
    ('linear', 50, 0.5), ('log', 50, 1 - np.exp(-5 * 0.5))])
def test_uda_training_signal_annealing(schedule, step, eta):
  lx = np.array([[2.0, 0.0, -1.0], [0.0, 0.2, 0.0]])
  yx = np.eye(3)[[0, 0]]
  _, aux, _ = _call(uda, step=np.int32(step), logits_x=lx, labels_x=yx,
                    hparams=dict(tsa=schedule))
  threshold = eta * (1 - 1 / 3) + 1 / 3
  _close(aux['tsa_threshold'], threshold)
  correct = _softmax(lx)[:, 0]  # [0.844, 0.322]
  keep = correct <= threshold
  assert keep[1]
  _close(aux['loss_x'], _ce(lx, yx)[keep].mean())
  # the confident row is dropped early on with 'exp' and kept near the end
  assert keep[0] == {('exp', 1): False, ('exp', 99): True, ('linear', 50): False,
                     ('log', 50): True}[(schedule, step)]


def test_flexmatch_thresholds_warmup_and_state():
  state = {'selected_label': SELECTED}
  loss, aux, new = _call(flexmatch, state=state)
  beta = np.array([3, 1, 0]) / max(3, 6)  # warm-up: the 6 unused rows dominate
  thr = 0.95 * beta / (2 - beta)
  assert thr[2] < thr[1] < thr[0] < 0.95  # rarely predicted classes get lower thresholds
  _close(aux['threshold_mean'], thr.mean())
  e = np.eye(3)
  keep = PW.max(-1) >= thr[PW.argmax(-1)]  # row 2: 0.5 >= 0.317 passes during warm-up
  assert keep.all()
  want_u = sum(_ce(LUS[i], e[PW[i].argmax()]) for i in range(3)) / 3
  _close(aux['loss_u'], want_u)
  _close(loss, _sup() + want_u)
  want_state = SELECTED.copy()
  want_state[INDEX[PW.max(-1) >= 0.95]] = PW.argmax(-1)[PW.max(-1) >= 0.95]  # row 0 -> U[4]
  np.testing.assert_array_equal(new['selected_label'], want_state)
  assert new['selected_label'].dtype == jnp.int32
  # without warm-up beta_0 = 1 and class 0's threshold is tau: the 0.5 row is masked out
  _, aux, _ = _call(flexmatch, state=state, hparams=dict(thresh_warmup=False))
  _close(aux['loss_u'], (_ce(LUS[0], e[0]) + _ce(LUS[1], e[1])) / 3)
  # fresh state: everything unused, beta = 0, every row passes (as USB's zero init)
  fresh = flexmatch.init_state(num_classes=3, num_unlabelled=10)
  _, aux, _ = _call(flexmatch, state=fresh)
  _close(aux['mask_rate'], 1.0)


def _freematch_by_hand(state, m=0.999):
  conf, pred = PW.max(-1), PW.argmax(-1)
  tau = m * state['tau'] + (1 - m) * conf.mean()
  p_model = m * state['p_model'] + (1 - m) * PW.mean(0)
  hist = m * state['label_hist'] + (1 - m) * np.bincount(pred, minlength=3) / 3
  keep = conf >= p_model[pred] / p_model.max() * tau
  return tau, p_model, hist, keep


def test_freematch_values_and_state():
  tau, p_model, hist, keep = _freematch_by_hand(FM_STATE)
  # class 1's threshold is scaled by p~_1 / max p~ = 0.6: 0.94 passes; 0.5 < tau for class 0
  assert keep.tolist() == [True, True, False]
  loss, aux, new = _call(freematch, state=FM_STATE)
  _close(new['tau'], tau, rtol=1e-6)
  _close(new['p_model'], p_model, rtol=1e-6)
  _close(new['label_hist'], hist, rtol=1e-6)
  e = np.eye(3)
  want_u = (_ce(LUS[0], e[0]) + _ce(LUS[1], e[1])) / 3
  _close(aux['loss_u'], want_u)
  # SAF on the kept rows: a = SumNorm(p~ / h~), b = SumNorm(p_bar / h_bar)
  p_s = _softmax(LUS[keep])
  h_bar = np.bincount(p_s.argmax(-1), minlength=3) / keep.sum()
  b = p_s.mean(0) * np.where(h_bar > 0, 1 / np.where(h_bar > 0, h_bar, 1), 0)
  b = b / b.sum()
  a = p_model / hist / (p_model / hist).sum()
  loss_f = np.sum(a * np.log(b + 1e-12))
  _close(aux['loss_f'], loss_f)
  _close(loss, _sup() + want_u + 0.01 * loss_f)


def test_freematch_nothing_masked_in():
  state = {'tau': 0.999, 'p_model': np.ones(3) / 3, 'label_hist': np.ones(3) / 3}
  loss, aux, _ = _call(freematch, state=state)
  assert float(aux['mask_rate']) == 0.0 and float(aux['loss_f']) == 0.0  # L_f needs kept rows
  _close(loss, _sup())


def test_freematch_tau_moves_toward_the_mean_confidence():
  init = freematch.init_state(num_classes=3, num_unlabelled=10)
  _close(init['tau'], 1 / 3)
  _, aux, new = _call(freematch, state=init)
  step = float(new['tau']) - 1 / 3
  np.testing.assert_allclose(step, (1 - 0.999) * (PW.max(-1).mean() - 1 / 3), rtol=1e-5, atol=2e-7)
  tau, _, _, keep = _freematch_by_hand({k: np.asarray(v, np.float64) for k, v in init.items()})
  _close(aux['tau'], tau, rtol=1e-6)
  _close(aux['mask_rate'], keep.mean())


def test_doubly_robust_values():
  loss, aux, _ = _call(doubly_robust)
  e = np.eye(3)
  l_x_hat = _ce(LX, e[LX.argmax(-1)])
  l_u_hat = _ce(LUW, e[PW.argmax(-1)])
  want = (l_x_hat.sum() + l_u_hat.sum()) / 5 - l_x_hat.mean() + _sup()  # Zhu et al. 2023
  _close(loss, want)
  _close(aux['loss_x'], _sup())
  _close(aux['agree_x'], 1.0)
  _, aux, _ = _call(doubly_robust, hparams=dict(student_view='strong'))
  _close(aux['loss_u'], (l_x_hat.sum() + _ce(LUS, e[PW.argmax(-1)]).sum()) / 5 - l_x_hat.mean())


STATES = {'flexmatch': {'selected_label': SELECTED}, 'freematch': FM_STATE}


def _state(name, num_classes=3, num_unlabelled=10):
  """The hand-made state of STATES, else the module's init_state (None if stateless)."""
  mod = MODULES[name]
  if name in STATES or not hasattr(mod, 'init_state'):
    return STATES.get(name)
  return jax.device_get(mod.init_state(num_classes=num_classes, num_unlabelled=num_unlabelled))


@pytest.mark.parametrize('name', sorted(MODULES))
def test_padding_never_changes_anything(name):
  mod, state = MODULES[name], _state(name)
  base = _call(mod, state=state)
  pad = lambda a, row: np.concatenate([a, np.asarray(row, np.float64)[None]])
  padded = _call(mod, state=state, logits_x=pad(LX, [9.0, -3.0, 5.0]), labels_x=pad(YX, [0, 0, 0]),
                 mask_x=np.array([1.0, 1.0, 0.0]), logits_uw=pad(LUW, [-9.0, 9.0, 0.0]),
                 logits_us=pad(LUS, [-4.0, 4.0, 0.0]), logits_ut=pad(LUT, [3.0, -3.0, 0.0]),
                 mask_u=np.array([1.0, 1.0, 1.0, 0.0]), index_u=np.array([4, 0, 7, 0]))
  chex.assert_trees_all_close(padded, base, rtol=1e-6)


@pytest.mark.parametrize('name', ['fixmatch', 'uda', 'flexmatch', 'freematch', 'pi_model',
                                  'mean_teacher', 'softmatch', 'adamatch', 'dash', 'defixmatch'])
def test_no_gradient_through_the_targets(name):
  mod, state = MODULES[name], _state(name)
  args = _inputs(state=_f32(state) if state else None, step=np.int32(90))

  def total(logits_uw, logits_us, logits_ut):
    return mod.loss(**{**args, 'logits_uw': logits_uw, 'logits_us': logits_us,
                       'logits_ut': logits_ut}, total_steps=100,
                    **({'tau': 0.5} if name == 'fixmatch' else {}))[0]

  grad = jax.jit(jax.grad(total, argnums=(0, 1, 2)))
  g_uw, g_us, g_ut = grad(args['logits_uw'], args['logits_us'], args['logits_ut'])
  assert float(jnp.abs(g_uw).max()) == 0.0
  assert float(jnp.abs(g_ut).max()) == 0.0
  assert float(jnp.abs(g_us).max()) > 1e-4  # the strong view is what trains


def test_gradients_that_should_flow():
  args = _inputs(step=np.int32(90))
  g = jax.jit(jax.grad(lambda z: pseudo_label.loss(**{**args, 'logits_uw': z},
                                                   total_steps=100)[0]))
  assert float(jnp.abs(g(args['logits_uw'])).max()) > 1e-4  # Lee 2013 trains the same view
  g = jax.jit(jax.grad(lambda z: pi_model.loss(**{**args, 'logits_uw': z}, total_steps=100,
                                               stop_gradient=False)[0]))
  assert float(jnp.abs(g(args['logits_uw'])).max()) > 1e-4  # the symmetric original


def _random_batch(seed=0, b=16, m=32, c=5, n=64):
  rng = np.random.default_rng(seed)
  logits_uw = rng.normal(size=(m, c)) * 3
  logits_uw = logits_uw[np.argsort(logits_uw.max(-1))]  # shards see different confidences
  mask_x, mask_u = np.ones(b), np.ones(m)
  mask_x[[2, 15]] = 0
  mask_u[[0, 9, 30, 31]] = 0
  return dict(logits_x=rng.normal(size=(b, c)) * 2, labels_x=rng.dirichlet(np.ones(c), size=b),
              mask_x=mask_x, logits_uw=logits_uw, logits_us=rng.normal(size=(m, c)) * 2,
              mask_u=mask_u, logits_ut=rng.normal(size=(m, c)),
              index_u=rng.permutation(n)[:m].astype(np.int32))


@pytest.mark.parametrize('name', sorted(MODULES))
def test_sharded_equals_single_device(name):
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (tests/conftest.py)')
  mod, c, n = MODULES[name], 5, 64
  rng = np.random.default_rng(1)
  state = {'flexmatch': {'selected_label': rng.integers(-1, c, size=n)},
           'freematch': {'tau': 0.6, 'p_model': rng.dirichlet(np.ones(c)),
                         'label_hist': rng.dirichlet(np.ones(c))}}.get(name) or _state(name, c, n)
  batch, state = _f32(_random_batch(c=c, n=n)), _f32(state)
  fn = jax.jit(functools.partial(mod.loss, total_steps=100))
  step = jnp.int32(30)
  dev0 = jax.devices()[0]
  single = fn(**jax.device_put(batch, dev0), state=jax.device_put(state, dev0), step=step)
  mesh = sharding.make_mesh(0)
  sharded_batch = jax.device_put(batch, sharding.data_sharded(mesh))
  sharded = fn(**sharded_batch, state=jax.device_put(state, sharding.replicated(mesh)), step=step)
  assert len(sharded_batch['logits_us'].sharding.device_set) == 8
  chex.assert_trees_all_close(jax.device_get(sharded), jax.device_get(single), rtol=1e-5,
                              atol=1e-7)
  if name == 'flexmatch':  # the check has teeth: some rows were written
    assert (np.asarray(sharded[2]['selected_label']) != np.asarray(state['selected_label'])).any()
