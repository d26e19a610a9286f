"""USB's logit-level algorithms (SoftMatch, AdaMatch, Dash, DeFixMatch) and distribution alignment.

Reference numbers come from plain numpy in float64, written from each paper's formula (and USB's
order of updates), never from w2s code; the losses run under jax.jit. Padding rows, stop-gradients
and 8-device sharding are checked here for the new modules too.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s import registry
from w2s.errors import UserError
from w2s.ssl import ALGORITHMS, adamatch, dash, defixmatch, dist_align, softmatch

NEW = {'softmatch': softmatch, 'adamatch': adamatch, 'dash': dash, 'defixmatch': defixmatch}

# B = 2 labelled rows, M = 3 unlabelled rows, C = 3 classes (as tests/test_ssl.py).
LX = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
YX = np.array([[1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
PW = np.array([[0.96, 0.02, 0.02], [0.03, 0.94, 0.03], [0.5, 0.3, 0.2]])  # q on the weak view
LUW = np.log(PW)
LUS = np.array([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
LXS = np.array([[0.0, 1.0, 0.0], [0.3, 0.3, 0.3]])  # a strong view of the labelled batch
E = np.eye(3)
TOTAL = 10_000  # Dash: warm-up int(10000 * 2048 / 2^20) = 19 steps, rho every 97 steps
T0, EVERY = 19, 97


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _ce(z, y):
  return -np.sum(y * np.log(_softmax(z)), axis=-1)


SUP = _ce(LX, YX).mean()


def _cast(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.int32 if np.asarray(a).dtype.kind == 'i'
                                             else jnp.float32), tree)


def _pad(a, row):
  return np.concatenate([a, np.asarray(row, np.float64)[None]])


def _inputs(padded=False, **over):
  args = dict(logits_x=LX, labels_x=YX, mask_x=np.ones(2), logits_uw=LUW, logits_us=LUS,
              mask_u=np.ones(3), step=np.int32(T0), index_u=np.array([4, 0, 7]))
  if padded:  # one padding row in each batch, with values that would change everything
    args.update(logits_x=_pad(LX, [9.0, -3.0, 5.0]), labels_x=_pad(YX, [0, 0, 0]),
                mask_x=np.array([1.0, 1.0, 0.0]), logits_uw=_pad(LUW, [-9.0, 9.0, 0.0]),
                logits_us=_pad(LUS, [-4.0, 4.0, 0.0]), mask_u=np.array([1.0, 1.0, 1.0, 0.0]),
                index_u=np.array([4, 0, 7, 0]))
  args.update(over)
  return _cast(args)


@functools.lru_cache(maxsize=None)
def _jitted(mod, total_steps, hparams):
  return jax.jit(functools.partial(mod.loss, total_steps=total_steps, **dict(hparams)))


def _call(mod, state=None, hparams=(), padded=False, total_steps=TOTAL, **over):
  if state is None and hasattr(mod, 'init_state'):
    state = mod.init_state(num_classes=3, num_unlabelled=10)
  return _jitted(mod, total_steps, tuple(sorted(dict(hparams).items())))(
      **_inputs(padded, **over), state=None if state is None else _cast(state))


def _close(got, want, rtol=1e-5, atol=0.0):
  np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol)


def test_registered_as_algorithms_and_dist_align_is_not():
  assert set(NEW) <= set(ALGORITHMS) and 'dist_align' not in ALGORITHMS
  known = registry.known('ssl')
  assert set(NEW) <= set(known) and 'dist_align' not in known
  assert registry.get('ssl', 'softmatch') is softmatch.loss
  with pytest.raises(UserError, match="unknown ssl algorithm 'dist_align'"):
    registry.get('ssl', 'dist_align')
  for name, mod in NEW.items():
    assert mod.NEEDS_TEACHER is False
    if hasattr(mod, 'init_state'):  # a pytree of float32 / int32 arrays (checkpointable)
      for leaf in jax.tree.leaves(mod.init_state(num_classes=3, num_unlabelled=10)):
        assert leaf.dtype in (jnp.float32, jnp.int32), name


# ---- distribution alignment -------------------------------------------------------------------

def _align(q, p_target, p_model, eps=1e-6):
  a = q * (p_target + eps) / (p_model + eps)
  return a / a.sum(-1, keepdims=True)


def test_dist_align_first_batch_ema_target_and_padding():
  m = 0.9
  q_u, q_x = _cast(PW), _cast(_softmax(LX))
  state = dist_align.init_state(3)
  first = dist_align.update(state, q_u, jnp.ones(3), momentum=m)
  _close(first['p_model'], PW.mean(0))  # USB: p~ starts at the first batch's mean
  _close(first['p_target'], np.ones(3) / 3)  # 'uniform' never moves
  second = dist_align.update(first, _cast(PW[:2]), jnp.ones(2), probs_x=q_x, mask_x=jnp.ones(2),
                             target='model', momentum=m)
  _close(second['p_model'], m * PW.mean(0) + (1 - m) * PW[:2].mean(0))
  _close(second['p_target'], m / 3 + (1 - m) * _softmax(LX).mean(0))  # AdaMatch: labelled EMA
  _close(dist_align.align(q_u, second), _align(PW, np.asarray(second['p_target'], np.float64),
                                               np.asarray(second['p_model'], np.float64)))
  # padding rows and all-padding batches change nothing
  padded = dist_align.update(first, _cast(_pad(PW[:2], [0.0, 0.0, 1.0])), jnp.array([1., 1., 0.]),
                             probs_x=_cast(_pad(_softmax(LX), [1.0, 0.0, 0.0])),
                             mask_x=jnp.array([1., 1., 0.]), target='model', momentum=m)
  chex.assert_trees_all_close(padded, second, rtol=1e-6)
  empty = dist_align.update(state, q_u, jnp.zeros(3), probs_x=q_x, mask_x=jnp.zeros(2),
                            target='model')
  chex.assert_trees_all_equal(empty, state)
  with pytest.raises(UserError, match="target='model' needs probs_x"):
    dist_align.update(state, q_u, jnp.ones(3), target='model')
  with pytest.raises(UserError, match='not one of'):
    dist_align.update(state, q_u, jnp.ones(3), target='gt')


# ---- SoftMatch ----------------------------------------------------------------------------------

def _softmatch_by_hand(state, m=0.999, n_sigma=2.0):
  p_model = PW.mean(0) if state['p_model'].sum() == 0 else (
      m * state['p_model'] + (1 - m) * PW.mean(0))
  conf = _align(PW, state['p_target'], p_model).max(-1)
  mu = m * state['mu'] + (1 - m) * conf.mean()
  var = m * state['var'] + (1 - m) * conf.var(ddof=1)
  w = np.where(conf < mu, np.exp(-(conf - mu) ** 2 / (2 * var / n_sigma ** 2)), 1.0)
  loss_u = np.mean(w * _ce(LUS, E[PW.argmax(-1)]))  # pseudo-labels from q, not the aligned q~
  return p_model, mu, var, w, loss_u


SM_STATE = {'p_model': np.array([0.5, 0.3, 0.2]), 'p_target': np.ones(3) / 3,
            'mu': np.array(0.9), 'var': np.array(0.5)}


def test_softmatch_values_and_state():  # padded (unpadded: test_padding_never_changes_anything)
  for state, m in ((SM_STATE, 0.999), (SM_STATE, 0.5),
                   ({k: np.asarray(v, np.float64) for k, v in
                     softmatch.init_state(num_classes=3).items()}, 0.999)):
    p_model, mu, var, w, loss_u = _softmatch_by_hand(state, m)
    loss, aux, new = _call(softmatch, state=state, hparams=dict(momentum=m), padded=True)
    _close(new['p_model'], p_model)
    _close(new['mu'], mu)
    _close(new['var'], var)
    _close(aux['weight_mean'], w.mean())
    _close(aux['loss_u'], loss_u)
    _close(loss, SUP + loss_u)
    if state is SM_STATE:  # row 2 (max q~ = 1/3 < mu) is weighted down, not cut
      assert w[:2].tolist() == [1.0, 1.0] and 0.01 < w[2] < 0.9


def test_softmatch_weights_are_a_truncated_gaussian():
  conf = jnp.array([0.2, 0.5, 0.7, 0.8, 0.95])
  w = np.asarray(softmatch.weights(conf, jnp.float32(0.7), jnp.float32(0.04)))
  _close(w, [np.exp(-0.25 / 0.02), np.exp(-0.04 / 0.02), 1.0, 1.0, 1.0], rtol=1e-5)
  assert np.all(np.diff(w) >= 0)  # never decreases with confidence
  wider = np.asarray(softmatch.weights(conf, jnp.float32(0.7), jnp.float32(0.16)))
  assert np.all(wider[:2] > w[:2])  # a larger variance keeps more of the unsure rows
  zero = np.asarray(softmatch.weights(conf, jnp.float32(0.7), jnp.float32(0.0)))
  np.testing.assert_array_equal(zero, [0.0, 0.0, 1.0, 1.0, 1.0])  # no 0 / 0


def test_softmatch_mu_tracks_a_confident_model():
  state = softmatch.init_state(num_classes=3)
  mus = []
  for _ in range(4):
    _, aux, state = _call(softmatch, state=jax.device_get(state), hparams=dict(momentum=0.5))
    mus.append(float(aux['mu']))
  assert mus[0] > 1 / 3 and np.all(np.diff(mus) > 0)  # towards the batch's mean confidence
  off, _, _ = _call(softmatch, state=SM_STATE, hparams=dict(dist_align=False))
  on, _, _ = _call(softmatch, state=SM_STATE)
  assert float(off) != float(on)  # alignment changes the weights


# ---- AdaMatch -----------------------------------------------------------------------------------

def _adamatch_by_hand(state, m=0.999, tau=0.95, lx=LX):
  p_l = _softmax(lx)
  p_model = PW.mean(0) if state['p_model'].sum() == 0 else (
      m * state['p_model'] + (1 - m) * PW.mean(0))
  p_target = m * state['p_target'] + (1 - m) * p_l.mean(0)
  q = _align(PW, p_target, p_model)
  threshold = tau * p_l.max(-1).mean()
  keep = q.max(-1) >= threshold
  loss_u = np.sum(np.where(keep, _ce(LUS, E[q.argmax(-1)]), 0.0)) / 3
  return p_model, p_target, threshold, keep, loss_u


AM_STATE = {'p_model': np.array([0.2, 0.5, 0.3]), 'p_target': np.array([0.3, 0.3, 0.4])}
AM_SKEW = {'p_model': np.array([0.9, 0.05, 0.05]), 'p_target': np.array([0.1, 0.45, 0.45])}


def test_adamatch_values_and_state():  # padded (unpadded: test_padding_never_changes_anything)
  init = {k: np.asarray(v, np.float64) for k, v in adamatch.init_state(num_classes=3).items()}
  for state, m, tau in ((init, 0.999, 0.95), (AM_STATE, 0.999, 0.95), (AM_STATE, 0.5, 0.95),
                        (AM_SKEW, 0.999, 0.5)):
    p_model, p_target, threshold, keep, loss_u = _adamatch_by_hand(state, m, tau)
    loss, aux, new = _call(adamatch, state=state, hparams=dict(momentum=m, tau=tau), padded=True)
    _close(new['p_model'], p_model)
    _close(new['p_target'], p_target)
    _close(aux['threshold'], threshold)
    _close(aux['mask_rate'], keep.mean())
    _close(aux['loss_u'], loss_u)
    _close(loss, SUP + loss_u)
  # from init the aligned row 2 moves to class 2 (rare in p~) and falls under c_tau = 0.70
  assert _adamatch_by_hand(init)[3].tolist() == [True, True, False]
  # the pseudo-label is the aligned argmax: row 2 (q argmax 0) is kept as class 1
  p_model, p_target, _, keep, _ = _adamatch_by_hand(AM_SKEW, tau=0.5)
  assert keep[2] and _align(PW, p_target, p_model)[2].argmax() == 1


def test_adamatch_threshold_follows_the_labelled_confidence():
  _, low, _ = _call(adamatch, logits_x=LX * 0.5)
  _, high, _ = _call(adamatch, logits_x=LX * 3.0)
  _close(high['threshold'], 0.95 * _softmax(LX * 3.0).max(-1).mean())
  assert float(high['threshold']) > float(low['threshold'])
  assert float(high['mask_rate']) < float(low['mask_rate'])


# ---- Dash ---------------------------------------------------------------------------------------

def _sharpen(p, T=0.5):
  s = p ** (1 / T)
  return s / s.sum(-1, keepdims=True)


def _dash_by_hand(rho_hat, k, C=1.0001, gamma=1.27, rho_min=0.05):
  rho = max(C * gamma ** -k * rho_hat, rho_min)
  target = E[PW.argmax(-1)] if rho <= rho_min else _sharpen(PW)
  keep = -np.sum(target * np.log(PW), -1) <= rho  # the weak view's own loss
  return rho, keep, np.sum(np.where(keep, _ce(LUS, target), 0.0)) / 3


def test_dash_warmup_then_measured_base_threshold():
  assert dash.schedule(TOTAL) == (T0, EVERY)
  loss, aux, state = _call(dash, step=np.int32(T0 - 1))  # warm-up: labelled CE only
  _close(loss, SUP)
  assert float(aux['loss_u']) == 0.0 and float(aux['rho']) == 0.0
  assert float(state['rho_hat']) == -1.0
  loss, aux, state = _call(dash, step=np.int32(T0), padded=True)  # rho_hat = the labelled CE
  _close(state['rho_hat'], SUP)
  rho, keep, loss_u = _dash_by_hand(SUP, 0)
  assert keep.tolist() == [True, True, False]  # H(sharpen(q), q) of row 2 is 0.91 > rho 0.42
  _close(aux['rho'], rho)
  _close(aux['loss_u'], loss_u)
  _close(loss, SUP + loss_u)
  assert float(aux['hard']) == 0.0


def test_dash_threshold_decays_to_hard_labels():
  rho_hat = {'rho_hat': np.array(SUP)}
  rhos, rates = [], []
  for k in (0, 3, 8, 9):
    step = T0 + k * EVERY + EVERY - 1  # the last step of the k-th period
    _, aux, state = _call(dash, state=rho_hat, step=np.int32(step), logits_x=LX * 2)
    _close(state['rho_hat'], SUP)  # measured once, never again
    rho, keep, loss_u = _dash_by_hand(SUP, k)
    _close(aux['rho'], rho)
    _close(aux['loss_u'], loss_u)
    assert float(aux['hard']) == float(rho == 0.05)
    _close(aux['mask_rate'], keep.mean())
    rhos.append(float(aux['rho']))
    rates.append(float(aux['mask_rate']))
  assert np.all(np.diff(rhos) < 0) and rhos[-1] == pytest.approx(0.05)
  assert rates == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1 / 3])  # row 1's loss 0.069 > rho_8 0.062
  with pytest.raises(UserError, match='fractions of total_steps'):
    dash.schedule(100, warmup=2048)


# ---- DeFixMatch ---------------------------------------------------------------------------------

def test_defixmatch_values_with_and_without_a_labelled_strong_view():
  _, aux, _ = _call(defixmatch)  # tau 0.95: no labelled row is that confident
  _close(aux['loss_fix_u'], _ce(LUS[0], E[0]) / 3)
  assert float(aux['loss_fix_x']) == 0.0
  fix_u = (_ce(LUS[0], E[0]) + _ce(LUS[1], E[1])) / 3  # tau 0.6: rows 0, 1 of U; both of L
  loss, aux, _ = _call(defixmatch, hparams=dict(tau=0.6), padded=True)
  fix_x = (_ce(LX[0], E[0]) + _ce(LX[1], E[1])) / 2  # weak view as target and prediction
  _close(aux['loss_u'], fix_u - fix_x)
  _close(loss, SUP + fix_u - fix_x)
  _close(aux['mask_rate_x'], 1.0)
  loss, aux, _ = _call(defixmatch, hparams=dict(tau=0.6), logits_xs=LXS)  # USB's exact form
  fix_x = (_ce(LXS[0], E[0]) + _ce(LXS[1], E[1])) / 2  # targets from the weak view
  _close(aux['loss_x'], (SUP + _ce(LXS, YX).mean()) / 2)
  _close(loss, (SUP + _ce(LXS, YX).mean()) / 2 + fix_u - fix_x)


def test_defixmatch_debiasing_cancels_and_its_gradient():
  # the same rows as labelled and unlabelled batch: the two pseudo-label terms cancel exactly
  _, aux, _ = _call(defixmatch, hparams=dict(tau=0.6), logits_x=LUW, labels_x=E[[0, 1, 0]],
                    mask_x=np.ones(3), logits_xs=LUS)
  _close(aux['loss_u'], 0.0, atol=1e-7)
  # d/dz_l [CE(y, p) - 1(conf >= tau) H(q^, p)] / B = (p - y) / B - keep (p - q^) / B:
  # row 0 (confident and right) stops pulling, row 1 keeps (q^ - y) / B
  args = _inputs()
  grad = jax.jit(jax.grad(lambda z: defixmatch.loss(**{**args, 'logits_x': z}, tau=0.6)[0]))
  _close(grad(args['logits_x']), [[0.0, 0.0, 0.0], [-0.1, 0.1, 0.0]], atol=1e-6)

