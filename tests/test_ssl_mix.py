"""Input-level SSL algorithms (MixMatch, ReMixMatch, VAT) and their MixUp / sharpening helpers.

Reference numbers are plain numpy in float64 from each paper's formula, on a linear model
z = W x + b whose logits, MixUp and VAT direction have closed forms; the random draws (MixUp's
lambda' and pairing, VAT's d) are taken from the module's documented key splits and treated as
given. The losses run under jax.jit. Then the step inside `train.fit`: 1 vs 8 devices, an exact
resume, and integer inputs refused.
"""
import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numeric  # tests/numeric.py

from w2s import options, registry, sharding, ssl_step, train
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.ssl import ALGORITHMS, mixmatch, mixup, remixmatch, vat

B, M, C, D = 2, 3, 3, 4
_r = np.random.default_rng(0)
W0, B0 = _r.normal(size=(C, D)), _r.normal(size=C) * 0.5
X = _r.normal(size=(B, D))
YX = np.array([[1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
U = _r.normal(size=(M, D))
SHIFT = _r.normal(size=(4, D)) * 0.3  # the k-th view of U: U + SHIFT[k] (weak), 0.5 U - SHIFT[k]
RNG = jax.random.PRNGKey(3)
STEP, TOTAL = 50, 6400  # MixMatch / ReMixMatch ramp 50 / (6400 / 64) = 0.5; VAT 50 / 2560


def _view_np(u, kind, k):
  return u + SHIFT[k] if kind == 'weak' else 0.5 * u - SHIFT[k]


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _ce(z, y):
  return -np.sum(y * np.log(_softmax(z)), axis=-1)


def _sharpen(p, T):
  s = p ** (1 / T)
  return s / s.sum(-1, keepdims=True)


def _lin(W, b):
  return lambda a: a @ W.T + b


def _args(x=X, y=YX, u=U, mask_x=None, mask_u=None, W=W0, b=B0):
  """Keyword arguments of an input-level `loss` on the linear model (float32)."""
  f = lambda a: jnp.asarray(a, jnp.float32)
  uj = f(u)

  def u_view(kind, k):
    shift = f(SHIFT[k])[None]
    return {'x': uj + shift if kind == 'weak' else 0.5 * uj - shift}

  def apply(inputs, key):
    del key  # no dropout in a linear model
    return inputs['x'] @ f(W).T + f(b)

  return dict(apply=apply, x={'x': f(x)}, labels_x=f(y),
              mask_x=f(np.ones(len(x)) if mask_x is None else mask_x), u_view=u_view,
              mask_u=f(np.ones(len(u)) if mask_u is None else mask_u), rng=RNG,
              step=jnp.int32(STEP), total_steps=TOTAL)


PAD_X, PAD_Y, PAD_U = np.full(D, 9.0), np.zeros(C), np.linspace(-7.0, 7.0, D)


def _padded_args():
  """One padding row (values that would change everything) appended to each batch."""
  return _args(x=np.vstack([X, PAD_X]), y=np.vstack([YX, PAD_Y]), u=np.vstack([U, PAD_U]),
               mask_x=np.array([1.0, 1.0, 0.0]), mask_u=np.array([1.0, 1.0, 1.0, 0.0]))


_ARGS = {False: _args(), True: _padded_args()}  # the closures are made once: jit caches


@functools.lru_cache(maxsize=None)
def _jitted(mod, hparams, padded):
  bound = {k: _ARGS[padded][k] for k in ('apply', 'u_view', 'total_steps')}
  return jax.jit(functools.partial(mod.loss, **bound, **dict(hparams)))


def _run(mod, state=None, hparams=(), padded=False):
  """mod.loss under jit (apply, u_view and the hparams bound before jit, compiled once)."""
  args = {k: v for k, v in _ARGS[padded].items() if k not in ('apply', 'u_view', 'total_steps')}
  return _jitted(mod, tuple(sorted(dict(hparams).items())), padded)(**args, state=state)


def _close(got, want, rtol=1e-5, atol=0.0):
  np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol)


# --- helpers --------------------------------------------------------------------------------

def test_registered_and_helpers_are_not():
  assert {'mixmatch', 'remixmatch', 'vat'} <= set(ALGORITHMS) == set(registry.known('ssl'))
  assert all(m.INPUT_LEVEL and not m.NEEDS_TEACHER for m in (mixmatch, remixmatch, vat))
  assert 'mixup' not in ALGORITHMS


def test_sharpen_ramp_and_mix_by_hand():
  p = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
  _close(mixup.sharpen(jnp.asarray(p, jnp.float32), 0.5), [[36, 9, 1] / np.float64(46),
                                                           [4, 4, 36] / np.float64(44)])
  _close(mixup.sharpen(jnp.asarray(p, jnp.float32), 2.0), _sharpen(p, 2.0))
  assert [float(mixup.ramp(t, 6400, 1 / 64)) for t in (0, 25, 100, 500)] == [0.0, 0.25, 1.0, 1.0]
  assert float(mixup.ramp(0, 10, 0.0)) == 1.0
  a = np.arange(12.0).reshape(4, 3)
  perm = jnp.array([2, 0, 1, 3])
  _close(mixup.mix({'a': jnp.asarray(a, jnp.float32)}, jnp.float32(0.7), perm)['a'],
         0.7 * a + 0.3 * a[[2, 0, 1, 3]])
  draws = np.asarray(jax.jit(jax.vmap(lambda k: mixup.mix_lambda(k, 0.75)))(
      jax.random.split(RNG, 200)))
  assert draws.min() >= 0.5 and draws.max() <= 1.0 and draws.std() > 0.05  # max(l, 1 - l)
  assert float(mixup.mix_lambda(RNG, 0.0)) == 1.0


def test_pairing_stays_among_real_rows_and_ignores_padding():
  masks = [jnp.array([1.0, 0.0, 1.0]), jnp.array([1.0, 1.0, 1.0, 0.0])]
  perm = np.asarray(mixup.partner(RNG, masks))
  real = np.array([1, 0, 1, 1, 1, 1, 0], bool)
  assert sorted(perm) == list(range(7))  # a permutation
  assert real[perm[real]].all() and not real[perm[~real]].any()
  # appending padding rows to each segment leaves the real rows' partners as they were
  padded = [jnp.concatenate([m, jnp.zeros(2)]) for m in masks]
  perm2 = np.asarray(mixup.partner(RNG, padded))
  old = np.flatnonzero(real)  # real rows' positions before and after padding
  new = np.flatnonzero(np.concatenate([np.asarray(p) > 0 for p in padded]))
  to_new = dict(zip(old, new))
  assert all(perm2[to_new[i]] == to_new[perm[i]] for i in old)
  # different keys pair differently (the draw is random)
  assert any((np.asarray(mixup.partner(k, masks)) != perm).any()
             for k in jax.random.split(RNG, 5))


# --- MixMatch -------------------------------------------------------------------------------

def _mix_draw(k_mix, masks, alpha):
  """MixUp's (lambda', perm) as `mixmatch.mixed_losses` draws them from its key."""
  k_draw, _ = jax.random.split(k_mix)
  lam, perm = mixup.draw(k_draw, masks, alpha)
  return float(lam), np.asarray(perm)


def _mixmatch_by_hand(W, b, q=None, K=2, T=0.5, alpha=0.75, lambda_u=75.0):
  f = _lin(W, b)
  views = [_view_np(U, 'weak', k) for k in range(K)]
  if q is None:
    q = _sharpen(np.mean([_softmax(f(v)) for v in views], axis=0), T)
  _, k_mix = jax.random.split(RNG)
  lam, perm = _mix_draw(k_mix, [jnp.ones(B)] + [jnp.ones(M)] * K, alpha)
  inputs = np.concatenate([X] + views)
  targets = np.concatenate([YX] + [q] * K)
  mx, mt = lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm]
  z = f(mx)
  loss_x = _ce(z[:B], mt[:B]).mean()
  loss_u = ((_softmax(z[B:]) - mt[B:]) ** 2).mean(-1).mean()
  weight = lambda_u * 0.5
  return loss_x + weight * loss_u, loss_x, loss_u, weight, lam, q


def test_mixmatch_values_by_hand():
  loss, aux, state, logits_x, logits_uw = _run(mixmatch)
  want, loss_x, loss_u, weight, lam, _ = _mixmatch_by_hand(W0, B0)
  assert 0.5 <= lam <= 1.0 and state is None
  _close(aux['mix_lambda'], lam)
  _close(aux['loss_x'], loss_x)
  _close(aux['loss_u'], loss_u, rtol=1e-4)  # squared differences of probabilities
  _close(aux['weight'], weight)
  _close(loss, want)
  _close(logits_x, _lin(W0, B0)(X), rtol=1e-5, atol=1e-6)
  _close(logits_uw, _lin(W0, B0)(_view_np(U, 'weak', 0)), rtol=1e-5, atol=1e-6)




def test_mixmatch_gradient_treats_the_guess_as_a_constant():
  q0 = _mixmatch_by_hand(W0, B0)[5]
  want = numeric.fd_grad(lambda W: _mixmatch_by_hand(W, B0, q=q0)[0], W0)
  got = jax.jit(jax.grad(lambda W: mixmatch.loss(**{**_args(), 'apply': lambda i, k: (
      i['x'] @ W.T + jnp.asarray(B0, jnp.float32))})[0]))(jnp.asarray(W0, jnp.float32))
  _close(got, want, rtol=1e-3, atol=1e-5)
  with_q_live = numeric.fd_grad(lambda W: _mixmatch_by_hand(W, B0)[0], W0)
  assert np.abs(with_q_live - want).max() > 1e-3  # the check has teeth


# --- ReMixMatch -----------------------------------------------------------------------------

def test_remixmatch_values_and_state_by_hand():
  state = remixmatch.init_state(num_classes=C, num_unlabelled=10)
  loss, aux, new, logits_x, logits_uw = _run(remixmatch, state=state)
  f = _lin(W0, B0)
  k_mix = jax.random.split(RNG, 3)[2]  # remixmatch.loss: weak pass, strong pass, MixUp
  p = _softmax(f(_view_np(U, 'weak', 0)))
  p_model = p.mean(0)  # first batch: p~ = its mean (dist_align's "no batch yet")
  aligned = p * (1 / C + 1e-6) / (p_model + 1e-6)
  q = _sharpen(aligned / aligned.sum(-1, keepdims=True), 0.5)
  strong = [_view_np(U, 'strong', k) for k in range(2)]
  loss_u1 = _ce(f(strong[0]), q).mean()
  lam, perm = _mix_draw(k_mix, [jnp.ones(B)] + [jnp.ones(M)] * 3, 0.75)
  inputs = np.concatenate([X] + strong + [_view_np(U, 'weak', 0)])
  targets = np.concatenate([YX, q, q, q])
  z = f(lam * inputs + (1 - lam) * inputs[perm])
  mt = lam * targets + (1 - lam) * targets[perm]
  loss_x, loss_u = _ce(z[:B], mt[:B]).mean(), _ce(z[B:], mt[B:]).mean()
  _close(new['p_model'], p_model, rtol=1e-6)
  _close(new['p_target'], np.full(C, 1 / C), rtol=1e-6)
  _close(aux['loss_u1'], loss_u1)
  _close(aux['loss_x'], loss_x)
  _close(aux['loss_u'], loss_u)
  _close(aux['weight'], 0.5)
  _close(loss, loss_x + 0.5 * (1.5 * loss_u + 0.5 * loss_u1))
  _close(logits_uw, f(_view_np(U, 'weak', 0)), rtol=1e-5, atol=1e-6)
  # second step: p~ is an EMA; dist_uniform=False moves p* towards the labelled label mean
  _close(_run(remixmatch, state=new)[2]['p_model'], p_model, rtol=1e-6)  # same batch again
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  _, lab = jax.jit(functools.partial(remixmatch.anchor, T=0.5, momentum=0.999, dist_uniform=False))(
      f32(f(_view_np(U, 'weak', 0))), f32(YX), jnp.ones(B), jnp.ones(M), state)
  _close(lab['p_target'], 0.999 / C + 0.001 * YX.mean(0), rtol=1e-6)
  with pytest.raises(UserError, match='remixmatch keeps distribution-alignment'):
    remixmatch.loss(**_args())


# --- VAT ------------------------------------------------------------------------------------

def _vat_direction_np(W, b, u, d, xi, eps):
  f = _lin(W, b)
  if xi > 0:
    g = (_softmax(f(u + xi * d)) - _softmax(f(u))) @ W  # grad_r KL at r = xi d, linear model
  else:
    p = _softmax(f(u))
    H = np.stack([np.diag(r) - np.outer(r, r) for r in p])  # Hessian of the KL in z at r = 0
    g = np.einsum('cd,mce,ef,mf->md', W, H, W, d)
  return eps * g / np.linalg.norm(g, axis=1, keepdims=True)


@pytest.mark.parametrize('xi', [0.1, 0.0])
def test_vat_direction_closed_form(xi):
  d = np.random.default_rng(1).normal(size=(M, D))
  d /= np.linalg.norm(d, axis=1, keepdims=True)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  fn = lambda inp: inp['x'] @ f32(W0).T + f32(B0)
  mask = jnp.array([1.0, 0.0, 1.0])
  r = jax.jit(functools.partial(vat.adversarial, fn, xi=xi, eps=6.0))(
      {'x': f32(U)}, fn({'x': f32(U)}), mask, {'x': f32(d)})['x']
  want = _vat_direction_np(W0, B0, U, d, xi, 6.0)
  _close(np.asarray(r)[[0, 2]], want[[0, 2]], rtol=1e-4, atol=1e-4 if xi else 1e-6)
  assert float(jnp.abs(r[1]).max()) == 0.0  # a padding row is not perturbed


def test_vat_random_unit_rows():
  unit = jax.jit(vat.random_unit)
  d = unit(RNG, {'a': jnp.zeros((3, 2, 2)), 'b': jnp.zeros((3, 5))})
  norms = np.sqrt((np.asarray(d['a']) ** 2).sum((1, 2)) + (np.asarray(d['b']) ** 2).sum(1))
  _close(norms, np.ones(3), rtol=1e-6)
  more = unit(RNG, {'a': jnp.zeros((5, 2, 2)), 'b': jnp.zeros((5, 5))})
  _close(more['a'][:3] / d['a'], 1.0, rtol=1e-5)  # rows do not depend on the rows after them


def _vat_by_hand(W, b, xi, frozen=None, lambda_ent=0.06):
  """(loss, loss_x, KL, entropy, weight, (r_adv, KL target)) on U's weak view U + SHIFT[0];
  `frozen` holds r_adv and the KL target fixed (for the gradient check)."""
  f, u = _lin(W, b), _view_np(U, 'weak', 0)
  k_d, _, _ = jax.random.split(RNG, 3)  # vat.loss: d from the first of its three keys
  d = np.asarray(vat.random_unit(k_d, {'x': jnp.zeros((M, D))})['x'], np.float64)
  p_u = _softmax(f(u))
  r_adv, target = frozen or (_vat_direction_np(W, b, u, d, xi, 6.0), p_u)
  kl = np.sum(target * (np.log(target) - np.log(_softmax(f(u + r_adv)))), axis=-1).mean()
  ent = -np.sum(p_u * np.log(p_u), axis=-1).mean()
  loss_x = _ce(f(X), YX).mean()
  weight = STEP / (0.4 * TOTAL)
  return loss_x + weight * kl + lambda_ent * ent, loss_x, kl, ent, weight, (r_adv, target)


def test_vat_values_by_hand():
  loss, aux, state, logits_x, logits_uw = _run(vat, hparams={'xi': 0.1})
  want, loss_x, kl, ent, weight, _ = _vat_by_hand(W0, B0, 0.1)
  assert state is None
  _close(aux['loss_x'], loss_x)
  _close(aux['loss_u'], kl, rtol=1e-4)
  _close(aux['loss_ent'], ent)
  _close(aux['weight'], weight)
  _close(aux['r_norm'], 6.0)
  _close(loss, want)
  _close(logits_uw, _lin(W0, B0)(_view_np(U, 'weak', 0)), rtol=1e-5, atol=1e-6)


def test_vat_gradient_r_adv_and_target_constant_entropy_live():
  frozen = _vat_by_hand(W0, B0, 0.1)[5]
  want = numeric.fd_grad(lambda W: _vat_by_hand(W, B0, 0.1, frozen=frozen)[0], W0)
  b = jnp.asarray(B0, jnp.float32)
  got = jax.jit(jax.grad(lambda W: vat.loss(**{**_args(), 'apply': lambda i, k: (
      i['x'] @ W.T + b)}, xi=0.1)[0]))(jnp.asarray(W0, jnp.float32))
  _close(got, want, rtol=1e-3, atol=1e-5)
  no_ent = numeric.fd_grad(lambda W: _vat_by_hand(W, B0, 0.1, frozen=frozen, lambda_ent=0.0)[0], W0)
  assert np.abs(no_ent - want).max() > 1e-3  # the entropy term trains (teeth)


# --- padding, integer inputs -----------------------------------------------------------------

@pytest.mark.parametrize('mod, hparams', [(mixmatch, ()), (remixmatch, ()), (vat, (('xi', 0.0),)),
                                           (vat, (('xi', 0.1),))],
                         ids=['mixmatch', 'remixmatch', 'vat-hvp', 'vat-xi0.1'])
def test_padding_never_changes_anything(mod, hparams):
  # (VAT at its default xi 1e-6 only up to float32 rounding, which its finite difference
  # amplifies: another batch shape moves r_adv, and the loss by ~1e-3; see w2s/ssl/vat.py)
  state = remixmatch.init_state(num_classes=C) if mod is remixmatch else None
  base = _run(mod, state=state, hparams=hparams)
  padded = _run(mod, state=state, hparams=hparams, padded=True)
  trim = lambda out: (out[0], out[1], out[2], out[3][:B], out[4][:M])
  jax.tree.map(lambda a, b: _close(a, b, rtol=1e-5, atol=1e-7), trim(padded), base)


def test_integer_inputs_are_refused():
  with pytest.raises(UserError, match="input field 'ids' is int32") as e:
    mixup.float_inputs({'ids': jnp.zeros((2, 3), jnp.int32), 'x': jnp.zeros((2, 3))}, 'vat')
  assert '\n' not in str(e.value)
  with pytest.raises(UserError, match="'mixmatch' mixes or perturbs the model inputs"):
    mixmatch.loss(**{**_args(), 'x': {'x': jnp.zeros((B, D), jnp.int32)}})


# --- the step inside train.fit ---------------------------------------------------------------

@pytest.fixture(scope='module')
def digits():
  ds = registry.build('datasets', dict(name='digits'))
  tr = pipeline.one_hot_labels({k: ds.split('train')[k] for k in ('id', 'label', 'x')}, 10)
  return {k: v[:64] for k, v in tr.items()}, {k: v[64:640] for k, v in tr.items()}


def _cfg(algo, steps=6, **hparams):
  return dict(loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=3e-3),
              batch_size=16, num_steps=steps, ssl=dict(name=algo, **hparams), unlabelled_ratio=2,
              checkpoint_every=3, log_every=3)


def _model():
  return registry.build('models', dict(name='mlp', hidden=(32,), dropout=0.1), num_classes=10)


@pytest.mark.parametrize('algo', ['remixmatch', 'vat'])  # remixmatch runs all of MixMatch's
def test_eight_devices_match_one(digits, tmp_path, algo):  # pieces (mixmatch's fit: ~12 s CPU)
  lab, unl = digits
  # VAT: the exact direction (xi=0); at xi 1e-6 float32 rounding, which differs between 1 and 8
  # devices, dominates the finite difference (w2s/ssl/vat.py)
  cfg = _cfg(algo, **({'xi': 0.0} if algo == 'vat' else {}))
  one, m1 = train.fit(_model(), lab, cfg=cfg, workdir=str(tmp_path / '1'),
                      mesh=sharding.make_mesh(1), unlabelled=unl)
  eight, m8 = train.fit(_model(), lab, cfg=cfg, workdir=str(tmp_path / '8'),
                        mesh=sharding.make_mesh(8), unlabelled=unl)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                                       atol=1e-6),
               (one.params, one.extra), (eight.params, eight.extra))
  np.testing.assert_allclose(m8['loss_u'], m1['loss_u'], rtol=1e-4)
  assert float(m8['loss_u']) > 0 and 0.0 <= float(m8['pseudo_acc']) <= 1.0
  if algo == 'remixmatch':  # the alignment EMA saw the batches
    assert float(np.sum(eight.extra['ssl']['p_model'])) > 0.99


def test_resume_continues_the_alignment_state_exactly(digits, tmp_path):
  lab, unl = digits
  mesh = sharding.make_mesh(1)
  run = lambda d: train.fit(_model(), lab, cfg=_cfg('remixmatch'), workdir=str(tmp_path / d),
                            mesh=mesh, unlabelled=unl)
  straight, _ = run('a')
  run('b')
  shutil.rmtree(tmp_path / 'b' / 'checkpoints' / '6')  # as if it died after step 3's save
  resumed, _ = run('b')
  assert int(resumed.step) == 6
  numeric.assert_same_state(straight, resumed)


def test_integer_inputs_refused_before_training(digits, tmp_path):
  lab, unl = digits
  as_int = lambda d: {**d, 'x': d['x'].astype(np.int32)}
  with pytest.raises(UserError, match="'vat' mixes or perturbs the model inputs, but input "
                                      "field 'x' is int32"):
    train.fit(_model(), as_int(lab), cfg=_cfg('vat'), workdir=str(tmp_path / 'v'),
              mesh=sharding.make_mesh(1), unlabelled=as_int(unl))
  assert not (tmp_path / 'v' / 'checkpoints').exists() or not any(
      (tmp_path / 'v' / 'checkpoints').iterdir())
  opts = options.TrainOptions.coerce(_cfg('mixmatch'))
  with pytest.raises(UserError, match="'mixmatch' mixes or perturbs"):
    ssl_step.check(opts, sharding.make_mesh(1), 576, examples=as_int(unl))
  ssl_step.check(opts, sharding.make_mesh(1), 576, examples=unl)  # float: fine
