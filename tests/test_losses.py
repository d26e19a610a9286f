"""Every loss against hand-computed values, padding invariance and its gradient.

Reference numbers are written out by hand (small literal cases) or computed
with plain numpy in float64 here, never by calling w2s code.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s import registry
from w2s.errors import UserError

LOSSES = ['xent', 'logconf', 'entropy', 'product', 'window', 'bootstrap', 'gce', 'adaptconf',
          'reliability']


def _np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _train_step_mean(per_example, mask):
  """What the train step reports: sum(pe * mask) / max(sum(mask), 1)."""
  return float(jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1))


def _run(name, logits, labels, mask=None, step_frac=1.0, batch=None, **hparams):
  logits, labels = jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.float32)
  mask = jnp.ones(logits.shape[0]) if mask is None else jnp.asarray(mask, jnp.float32)
  loss_fn = jax.jit(registry.bind('losses', dict(name=name, **hparams)))
  return loss_fn(logits=logits, labels=labels, mask=mask, step_frac=step_frac, batch=batch)


# One row with p = [0.25, 0.75]: logits [0, ln 3].
Z1 = [[0.0, np.log(3.0)]]
LN = np.log


def test_registry_lists_every_loss():
  assert set(LOSSES) <= set(registry.known('losses'))


# --- hand-computed single-row values -------------------------------------------------------

@pytest.mark.parametrize('name, labels, hparams, expected', [
    ('xent', [[0.5, 0.5]], {}, -(0.5 * LN(0.25) + 0.5 * LN(0.75))),
    # target ∝ p * y = [0.125, 0.375] -> [0.25, 0.75]: CE = H(p)
    ('product', [[0.5, 0.5]], {}, -(0.25 * LN(0.25) + 0.75 * LN(0.75))),
    # target ∝ [0.25*0.8, 0.75*0.2] = [0.2, 0.15] -> [4/7, 3/7]
    ('product', [[0.8, 0.2]], {}, -(4 / 7 * LN(0.25) + 3 / 7 * LN(0.75))),
    # beta = 0: target = y
    ('product', [[0.8, 0.2]], {'beta': 0.0}, -(0.8 * LN(0.25) + 0.2 * LN(0.75))),
    # soft, beta .95: .95 [1, 0] + .05 [.25, .75] = [.9625, .0375]
    ('bootstrap', [[1.0, 0.0]], {}, -(0.9625 * LN(0.25) + 0.0375 * LN(0.75))),
    # hard, beta .8: .8 [1, 0] + .2 [0, 1]
    ('bootstrap', [[1.0, 0.0]], {'mode': 'hard'}, -(0.8 * LN(0.25) + 0.2 * LN(0.75))),
    ('bootstrap', [[1.0, 0.0]], {'mode': 'hard', 'beta': 0.5}, -(0.5 * LN(0.25) + 0.5 * LN(0.75))),
    # <y, p> = 0.5
    ('gce', [[0.5, 0.5]], {}, (1 - 0.5 ** 0.7) / 0.7),
    ('gce', [[0.0, 1.0]], {'q': 1.0}, 0.25),  # MAE-like: 1 - p_y
    # entropy at s = 1: alpha = .5, target = .5 [1, 0] + .5 [.25, .75] = [.625, .375]
    ('entropy', [[1.0, 0.0]], {}, -(0.625 * LN(0.25) + 0.375 * LN(0.75))),
    # adaptconf: ce_self = -ln .75, ce_weak = -ln .25, a = (4/3) / (4/3 + 4) = 1/4,
    # KD = KL([.6, .4] || [.25, .75])
    ('adaptconf', [[0.6, 0.4]], {},
     0.75 * (0.6 * LN(0.6 / 0.25) + 0.4 * LN(0.4 / 0.75)) + 0.25 * -LN(0.75)),
])
def test_single_row_values(name, labels, hparams, expected):
  per_example, _ = _run(name, Z1, labels, **hparams)
  np.testing.assert_allclose(per_example, [expected], rtol=1e-5)


def test_gce_small_q_approaches_cross_entropy():
  per_example, _ = _run('gce', Z1, [[0.0, 1.0]], q=1e-3)
  np.testing.assert_allclose(per_example, [-LN(0.75)], rtol=1e-3)


def test_adaptconf_temperatures_match_numpy():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 4)) * 2
  y = rng.dirichlet(np.ones(4), size=6)
  T, tau = 0.5, 2.0
  p = _np_softmax(z)
  ce_self = -np.log(p.max(-1))
  ce_weak = -np.log(p[np.arange(6), y.argmax(-1)])
  a = np.exp(ce_self / T) / (np.exp(ce_self / T) + np.exp(ce_weak / T))
  q = y ** (1 / tau) / (y ** (1 / tau)).sum(-1, keepdims=True)
  kd = tau ** 2 * np.sum(q * (np.log(q) - np.log(_np_softmax(z / tau))), -1)
  per_example, aux = _run('adaptconf', z, y, T=T, tau=tau)
  np.testing.assert_allclose(per_example, (1 - a) * kd + a * ce_self, rtol=1e-5)
  np.testing.assert_allclose(aux['mean_a'], a.mean(), rtol=1e-5)
  # Their release's warmup: a ramps with s / 0.25.
  per_example, _ = _run('adaptconf', z, y, T=T, tau=tau, warmup_frac=0.25, step_frac=0.125)
  np.testing.assert_allclose(per_example, (1 - a / 2) * kd + a / 2 * ce_self, rtol=1e-5)


def test_window_uses_median_weak_confidence_of_real_rows():
  y1 = np.array([0.9, 0.7, 0.4, 0.5, 1.0])  # max - .5 = [.4, .2, .1, 0]: median .15 -> window .65
  p1 = np.array([0.6, 0.8, 0.5, 0.32, 0.5])  # max p = [.6, .8, .5, .68]: inside = [1, 0, 1, 0]
  mask = np.array([1, 1, 1, 1, 0.0])  # with the padded row the median would be .2 and row 3 inside
  labels, probs = np.stack([1 - y1, y1], 1), np.stack([1 - p1, p1], 1)
  labels[4] = 0.0  # padding may carry all-zero labels
  per_example, aux = _run('window', np.log(probs), labels, mask)
  ce = -np.sum(labels * np.log(probs), -1)
  np.testing.assert_allclose(per_example, [ce[0], 0, ce[2], 0, 0], rtol=1e-5)
  np.testing.assert_allclose(_train_step_mean(per_example, mask), (ce[0] + ce[2]) / 4, rtol=1e-5)
  np.testing.assert_allclose(aux['radius'], 0.15, rtol=1e-5)
  np.testing.assert_allclose(aux['window_frac'], 0.5)
  per_example, _ = _run('window', np.log(probs), labels, mask, radius=0.25)  # window .75
  np.testing.assert_allclose(per_example, [ce[0], 0, ce[2], ce[3], 0], rtol=1e-5)


MEMBERS = np.array([  # [B=4, K=4, C=2]
    [[0.2, 0.8], [0.1, 0.9], [0.3, 0.7], [0.4, 0.6]],  # all vote 1: r = 1
    [[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8]],  # mean [.6, .4]: 3 of 4 agree
    [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]],  # mean [.6, .4]: 2 of 4 agree
    [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]],  # padding
])


@pytest.mark.parametrize('hparams, weights', [
    ({}, [1.0, 0.75, 0.5]),
    ({'mode': 'filter', 'tau': 0.75}, [1.0, 1.0, 0.0]),
    ({'measure': 'entropy'}, 1 + np.sum(np.array([[0.25, 0.75], [0.6, 0.4], [0.6, 0.4]])
                                        * np.log([[0.25, 0.75], [0.6, 0.4], [0.6, 0.4]]), -1)
     / np.log(2)),
])
def test_reliability_weighted_mean(hparams, weights):
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 2))
  labels = MEMBERS.mean(1)
  mask = np.array([1, 1, 1, 0.0])
  per_example, _ = _run('reliability', logits, labels, mask, batch={'member_probs': MEMBERS},
                        **hparams)
  ce = -np.sum(labels * np.log(_np_softmax(logits)), -1)[:3]
  weights = np.asarray(weights)
  expected = np.sum(weights * ce) / np.sum(weights)
  np.testing.assert_allclose(_train_step_mean(per_example, mask), expected, rtol=1e-5)
  assert per_example[3] == 0


def test_reliability_needs_member_probs():
  with pytest.raises(UserError, match='member_probs'):
    _run('reliability', Z1, [[0.5, 0.5]])
  with pytest.raises(UserError, match='member_probs'):
    _run('reliability', Z1, [[0.5, 0.5]], batch={'member_probs': np.ones((1, 3))})


@pytest.mark.parametrize('name, hparams', [('bootstrap', {'mode': 'medium'}), ('gce', {'q': 0.0}),
                                           ('reliability', {'mode': 'vote'}),
                                           ('logconf', {'harden': 'median'})])
def test_bad_hparams_raise_user_error(name, hparams):
  with pytest.raises(UserError):
    _run(name, Z1, [[0.5, 0.5]], batch={'member_probs': MEMBERS[:1]}, **hparams)


# --- padding and gradients -------------------------------------------------------------------

def _random_batch(rng, b, c, k=5):
  return dict(logits=rng.normal(size=(b, c)) * 2, labels=rng.dirichlet(np.ones(c), size=b),
              member_probs=rng.dirichlet(np.ones(c), size=(b, k)))


def _np_grad(name, z, y, member_probs):
  """d sum_i pe_i / dz [B, C] over real rows, every target held fixed (numpy, defaults, s = 1)."""
  p = _np_softmax(z)
  b, c = z.shape
  if name == 'xent':
    return p - y
  if name == 'entropy':  # target (1 - .5) y + .5 sg(p)
    return 0.5 * (p - y)
  if name == 'product':
    return p - p * y / np.sum(p * y, -1, keepdims=True)
  if name == 'bootstrap':
    return p - (0.95 * y + 0.05 * p)
  if name == 'logconf':  # Burns: threshold = quantile of p_0 at mean y_1 (numpy 'linear')
    t = np.quantile(p[:, 0], y[:, 1].mean())
    h = np.stack([p[:, 0] >= t, p[:, 0] < t], 1).astype(float)
    return p - (0.5 * y + 0.5 * h)
  if name == 'gce':
    agree = np.sum(y * p, -1, keepdims=True)
    return -agree ** (0.7 - 1) * p * (y - agree)
  if name == 'window':
    r = np.median(y.max(-1) - 0.5)
    return (p.max(-1) < 0.5 + r)[:, None] * (p - y)
  if name == 'adaptconf':
    own = np.eye(c)[p.argmax(-1)]
    ce_self, ce_weak = -np.log(p.max(-1)), -np.log(p[np.arange(b), y.argmax(-1)])
    a = (1 / (1 + np.exp(ce_weak - ce_self)))[:, None]
    return (1 - a) * (p - y) + a * (p - own)
  if name == 'reliability':
    r = np.mean(member_probs.argmax(-1) == member_probs.mean(1).argmax(-1)[:, None], 1)
    return (r * b / r.sum())[:, None] * (p - y)
  raise AssertionError(name)


@pytest.mark.parametrize('name, num_classes', [(name, 2) for name in LOSSES] + [('logconf', 3)])
def test_padding_and_stop_gradient_targets(name, num_classes):
  """Padding (any content) changes nothing, returns 0 and gets no gradient; the gradient on the
  real rows is the numpy one with every target held constant (sg) and statistics over real rows."""
  rng = np.random.default_rng(2)
  real = _random_batch(rng, 12, num_classes)

  @jax.jit
  def value_and_grad(z, labels, mask, member_probs):
    def total(z):
      pe, aux = registry.get('losses', name)(logits=z, labels=labels, mask=mask, step_frac=1.0,
                                             batch={'member_probs': member_probs})
      return jnp.sum(pe * mask), (pe, aux)
    return jax.value_and_grad(total, has_aux=True)(z)

  mask = jnp.asarray(np.concatenate([np.ones(12), np.zeros(4)]), jnp.float32)
  results = []
  for scale in (1.0, 30.0):  # two different paddings: moderate and extreme logits
    pad = _random_batch(rng, 4, num_classes)
    pad['logits'] *= scale
    if scale > 1:
      pad['labels'] = np.zeros_like(pad['labels'])  # padding may carry all-zero labels
    both = [jnp.asarray(np.concatenate([real[k], pad[k]]), jnp.float32)
            for k in ('logits', 'labels', 'member_probs')]
    (_, (pe, aux)), grad = value_and_grad(both[0], both[1], mask, both[2])
    np.testing.assert_array_equal(pe[12:], 0.0)
    np.testing.assert_array_equal(grad[12:], 0.0)
    results.append((pe[:12], aux, grad[:12]))
  chex.assert_trees_all_close(results[0], results[1], atol=1e-6)
  if num_classes == 2:
    expected = _np_grad(name, real['logits'], real['labels'], real['member_probs'])
    np.testing.assert_allclose(results[0][2], expected, atol=2e-5)
  (_, (pe, aux)), grad = value_and_grad(both[0], both[1], jnp.zeros(16), both[2])
  np.testing.assert_array_equal(pe, 0.0)  # an all-padding batch is finite and 0
  np.testing.assert_array_equal(grad, 0.0)
  assert all(np.isfinite(v) for v in jax.tree.leaves(aux))
