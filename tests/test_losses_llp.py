"""Learning-from-label-proportions losses (easyllp, proportion): hand-computed values, padding,
gradients against closed forms, the trainer's loss check, sharding, and a tiny model that learns.

Reference numbers are written out by hand or computed with plain numpy here, never by w2s code.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2s import options, registry, train
from w2s.errors import UserError

LN = np.log
Z_QUARTER = [0.0, np.log(3.0)]   # p = [.25, .75]
Z_HALF = [0.0, 0.0]              # p = [.5, .5]
Z_FIFTH = [0.0, np.log(4.0)]     # p = [.2, .8]


def _run(name, logits, labels, mask=None, batch=None, **hparams):
  logits, labels = jnp.asarray(logits, jnp.float32), jnp.asarray(labels, jnp.float32)
  mask = jnp.ones(logits.shape[0]) if mask is None else jnp.asarray(mask, jnp.float32)
  batch = None if batch is None else {k: jnp.asarray(v) for k, v in batch.items()}
  loss_fn = jax.jit(registry.bind('losses', dict(name=name, **hparams)))
  return loss_fn(logits=logits, labels=labels, mask=mask, step_frac=0.0, batch=batch)


def _np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _step_mean(pe, mask):
  return float(np.sum(np.asarray(pe) * mask) / max(np.sum(mask), 1))


def test_registered_and_checked_like_every_loss():
  assert {'easyllp', 'proportion'} <= set(registry.known('losses'))
  p = options.plugin('losses', dict(name='easyllp', bag_size=8, prior=[0.5, 0.5]), 'student.loss')
  train.check_loss(p, num_classes=2, where='student.loss')
  with pytest.raises(UserError, match="loss 'easyllp' has no option 'k'"):
    options.plugin('losses', dict(name='easyllp', k=8), 'student.loss')
  # proportion needs the batch to carry bag ids: the trainer's check says so unless told
  p = options.plugin('losses', dict(name='proportion'), 'student.loss')
  with pytest.raises(UserError, match=r"batch\['bag_id'\]"):
    train.check_loss(p, num_classes=3, where='student.loss')
  train.check_loss(p, num_classes=3, where='student.loss',
                   batch_extras={'bag_id': jax.ShapeDtypeStruct((8,), jnp.int32)})


# --- easyllp -------------------------------------------------------------------------------------

def test_easyllp_hand_values():
  # k = 4, alpha = [.75, .25], p = [.5, .5]: y~ = 4 [.25, -.25] + .5 = [1.5, -.5]
  pe, aux = _run('easyllp', [Z_QUARTER], [[0.75, 0.25]], bag_size=4, prior=[0.5, 0.5])
  np.testing.assert_allclose(pe, [-(1.5 * LN(0.25) - 0.5 * LN(0.75))], rtol=1e-5)
  assert float(aux['negative_share']) == 1.0
  np.testing.assert_allclose(aux['min_surrogate'], -0.5, rtol=1e-5)
  # k = 1: plain cross-entropy on the label
  pe, _ = _run('easyllp', [Z_QUARTER], [[0.0, 1.0]], bag_size=1, prior=[0.9, 0.1])
  np.testing.assert_allclose(pe, [-LN(0.75)], rtol=1e-5)


def test_easyllp_per_example_bag_sizes_from_the_batch():
  # p = [.4, .6]; k = 2, alpha = [.5, .5]: y~ = 2 [.1, -.1] + p = [.6, .4];
  # k = 3, alpha = [1/3, 2/3]: y~ = 3 [-1/15, 1/15] + p = [.2, .8]
  pe, aux = _run('easyllp', [Z_QUARTER, Z_FIFTH], [[0.5, 0.5], [1 / 3, 2 / 3]],
                 batch={'bag_size': np.array([2, 3], np.int32)}, prior=[0.4, 0.6])
  np.testing.assert_allclose(pe, [-(0.6 * LN(0.25) + 0.4 * LN(0.75)),
                                  -(0.2 * LN(0.2) + 0.8 * LN(0.8))], rtol=1e-5)
  assert float(aux['negative_share']) == 0.0


def test_easyllp_estimated_prior_ignores_padding():
  # real rows' alpha [.75, .25], [.25, .75] -> p = [.5, .5] (the padded [1, 0] would make it
  # [2/3, 1/3]); k = 2: y~ = [1, 0] and [0, 1]
  labels = [[0.75, 0.25], [0.25, 0.75], [1.0, 0.0]]
  logits = [Z_QUARTER, Z_FIFTH, [30.0, -30.0]]
  pe, aux = _run('easyllp', logits, labels, mask=[1, 1, 0], bag_size=2)
  np.testing.assert_allclose(pe, [-LN(0.25), -LN(0.8), 0.0], rtol=1e-5)
  np.testing.assert_allclose(aux['min_surrogate'], 0.0, atol=1e-6)
  pe_all, _ = _run('easyllp', logits[:2], labels[:2], bag_size=2)
  np.testing.assert_allclose(pe_all, pe[:2], rtol=1e-6)


@pytest.mark.parametrize('hp, batch, match', [
    ({}, None, 'exactly one place.*got neither'),
    ({'bag_size': 4}, {'bag_size': np.array([4])}, 'got both'),
    ({'bag_size': 0}, None, 'bag_size=0 must be an int >= 1'),
    ({'bag_size': 4, 'prior': [0.5, 0.4]}, None, 'must be 2 non-negative class shares'),
    ({'bag_size': 4, 'prior': [0.5, 0.5, 0.0]}, None, 'must be 2 non-negative class shares'),
    ({}, {'bag_size': np.array([4, 4])}, r"batch\['bag_size'\] has shape \(2,\)"),
])
def test_easyllp_bad_inputs(hp, batch, match):
  with pytest.raises(UserError, match=match):
    _run('easyllp', [Z_QUARTER], [[0.5, 0.5]], batch=batch, **hp)


# --- proportion ----------------------------------------------------------------------------------

# Bag 7: rows 0, 1 with p = [.25, .75] each, alpha [.5, .5]; bag 3: rows 2-4 with p = [.5, .5],
# [.5, .5], [.2, .8] (mean [.4, .6]), alpha [1/3, 2/3]; row 5 is padding in bag 7 (as the eval
# pipeline pads with copies of row 0) with extreme logits and all-zero labels.
PROP_LOGITS = [Z_QUARTER, Z_QUARTER, Z_HALF, Z_HALF, Z_FIFTH, [40.0, -40.0]]
PROP_LABELS = [[0.5, 0.5]] * 2 + [[1 / 3, 2 / 3]] * 3 + [[0.0, 0.0]]
PROP_IDS = np.array([7, 7, 3, 3, 3, 7], np.int32)
PROP_MASK = np.array([1, 1, 1, 1, 1, 0.0])
KL7 = 0.5 * LN(0.5 / 0.25) + 0.5 * LN(0.5 / 0.75)
KL3 = 1 / 3 * LN((1 / 3) / 0.4) + 2 / 3 * LN((2 / 3) / 0.6)


def test_proportion_hand_values_and_padding():
  pe, aux = _run('proportion', PROP_LOGITS, PROP_LABELS, PROP_MASK, batch={'bag_id': PROP_IDS})
  np.testing.assert_allclose(pe, [KL7 / 2] * 2 + [KL3 / 3] * 3 + [0.0], rtol=1e-5)
  np.testing.assert_allclose(_step_mean(pe, PROP_MASK), (KL7 + KL3) / 5, rtol=1e-5)
  assert float(aux['num_bags']) == 2 and float(aux['members_per_bag']) == pytest.approx(2.5)
  # the padded row counted would move bag 7's mean to [.5, .5] (KL 0)
  pe_no_pad, _ = _run('proportion', PROP_LOGITS[:5], PROP_LABELS[:5],
                      batch={'bag_id': PROP_IDS[:5]})
  np.testing.assert_allclose(pe_no_pad, pe[:5], rtol=1e-6)


def test_proportion_ids_are_labels_only():
  """Any integer ids, rows in any order: the same per-example losses, permuted."""
  perm = np.array([4, 0, 5, 2, 1, 3])
  ids = np.where(PROP_IDS == 7, -5, 10 ** 6).astype(np.int32)[perm]
  pe, _ = _run('proportion', np.asarray(PROP_LOGITS)[perm], np.asarray(PROP_LABELS)[perm],
               PROP_MASK[perm], batch={'bag_id': ids})
  np.testing.assert_allclose(pe, np.array([KL7 / 2] * 2 + [KL3 / 3] * 3 + [0.0])[perm],
                             rtol=1e-5)


def test_proportion_singletons_and_zero_proportions():
  # one-member bags: KL(alpha || p_i); alpha [1, 0] gives -log p_0 (0 log 0 = 0)
  pe, aux = _run('proportion', [Z_QUARTER, Z_FIFTH], [[1.0, 0.0], [0.5, 0.5]],
                 batch={'bag_id': np.array([0, 1], np.int32)})
  np.testing.assert_allclose(pe, [-LN(0.25), 0.5 * LN(0.5 / 0.2) + 0.5 * LN(0.5 / 0.8)],
                             rtol=1e-5)
  assert float(aux['members_per_bag']) == 1.0


@pytest.mark.parametrize('batch, match', [
    (None, r"needs batch\['bag_id'\] int \[B\]"),
    ({'bag_size': np.array([2])}, r"needs batch\['bag_id'\]"),
    ({'bag_id': np.array([0, 1], np.int32)}, r'expected integer \[B\] = \(1,\)'),
    ({'bag_id': np.array([0.0], np.float32)}, r'is float32 \(1,\), expected integer'),
])
def test_proportion_bad_inputs(batch, match):
  with pytest.raises(UserError, match=match):
    _run('proportion', [Z_QUARTER], [[0.5, 0.5]], batch=batch)


# --- gradients --------------------------------------------------------------------------------

def _grad(name, z, labels, mask, batch, **hp):
  fn = registry.bind('losses', dict(name=name, **hp))

  @jax.jit
  def value_and_grad(z):
    def total(z):
      pe, aux = fn(logits=z, labels=labels, mask=mask, step_frac=0.0, batch=batch)
      return jnp.sum(pe * mask), (pe, aux)
    return jax.value_and_grad(total, has_aux=True)(z)
  return value_and_grad(jnp.asarray(z, jnp.float32))


def _llp_batch(rng, b=16, c=3, k=4):
  ids = np.repeat(np.arange(b // k), k).astype(np.int32)
  y = rng.integers(0, c, size=b)
  alpha = np.zeros((b // k, c))
  np.add.at(alpha, ids, np.eye(c)[y])
  alpha = (alpha / k)[ids]
  return rng.normal(size=(b, c)) * 2, alpha, ids


@pytest.mark.parametrize('name', ['easyllp', 'proportion'])
def test_gradients_closed_form_finite_and_zero_on_padding(name):
  rng = np.random.default_rng(0)
  z, alpha, ids = _llp_batch(rng)
  mask = np.ones(16)
  mask[[5, 14]] = 0  # padding inside bags 1 and 3
  hp = {'bag_size': 4, 'prior': [0.3, 0.3, 0.4]} if name == 'easyllp' else {}
  batch = {'bag_id': jnp.asarray(ids)}
  (_, (pe, _)), g = _grad(name, z, jnp.asarray(alpha, jnp.float32), jnp.asarray(mask), batch, **hp)
  p, real = _np_softmax(z), mask > 0
  if name == 'easyllp':  # d/dz of -<y~, log softmax z> with sum y~ = 1: p - y~
    expected = p - (4 * (alpha - [0.3, 0.3, 0.4]) + [0.3, 0.3, 0.4])
  else:  # sum_b KL(alpha_b || pbar_b): member i gets (1/n_b) p_i * (g_b - <p_i, g_b>)
    expected = np.zeros_like(z)
    for bag in np.unique(ids):
      rows = np.flatnonzero((ids == bag) & real)
      gb = -alpha[rows[0]] / p[rows].mean(0)
      expected[rows] = p[rows] * (gb - np.sum(p[rows] * gb, -1, keepdims=True)) / len(rows)
  expected[~real] = 0.0
  np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(pe)[~real], 0.0)
  # extreme logits, zero labels on padding, and an all-padding batch: finite everywhere
  z_big = z * 50
  alpha_pad = np.where(real[:, None], alpha, 0.0)
  for m in (mask, np.zeros(16)):
    (total, (pe, aux)), g = _grad(name, z_big, jnp.asarray(alpha_pad, jnp.float32),
                                  jnp.asarray(m), batch, **hp)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(pe)) and np.isfinite(float(total))
    assert all(np.isfinite(v) for v in jax.tree.leaves(aux))
    np.testing.assert_array_equal(np.asarray(g)[m == 0], 0.0)


@pytest.mark.parametrize('name', ['easyllp', 'proportion'])
def test_sharded_equals_single_device(name):
  """Bags spread over the 8 devices' shards (tests/conftest.py): the same values as on one."""
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices')
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  rng = np.random.default_rng(1)
  z, alpha, ids = _llp_batch(rng, b=32, k=8)
  ids = ids[rng.permutation(32)]  # every bag's members land on several shards
  mask = np.ones(32)
  mask[[3, 17]] = 0
  batch = {'logits': z, 'label': alpha, 'mask': mask}
  batch = {k: np.asarray(v, np.float32) for k, v in batch.items()}
  batch['bag_id'] = ids
  fn = registry.bind('losses', dict(name=name, **({'bag_size': 8} if name == 'easyllp' else {})))
  apply = jax.jit(lambda b: fn(logits=b['logits'], labels=b['label'], mask=b['mask'], batch=b))
  single = apply(jax.device_put(batch, jax.devices()[0]))
  sharded = apply(jax.device_put(batch, NamedSharding(mesh, P('data'))))
  chex.assert_trees_all_close(jax.device_get(sharded), jax.device_get(single), atol=1e-6)


# --- a tiny logistic model learns from bags -----------------------------------------------------

C, D, K, N, STEPS, BS = 3, 8, 8, 4096, 400, 256


def _blobs(seed):
  rng = np.random.default_rng(seed)
  y = rng.choice(C, size=N, p=[0.5, 0.3, 0.2])
  return (2.0 * np.eye(C, D)[y] + rng.normal(size=(N, D))).astype(np.float32), y


@pytest.fixture(scope='module')
def bags():
  """Train examples in i.i.d. random bags of K (rows grouped by bag), each labelled with its bag's
  proportion; a test set with the hidden labels."""
  x, y = _blobs(0)
  bag = np.random.default_rng(2).permutation(N) // K
  order = np.argsort(bag, kind='stable')
  x, y, bag = x[order], y[order], bag[order]
  alpha = np.zeros((N // K, C))
  np.add.at(alpha, bag, np.eye(C)[y])
  return x, (alpha / K)[bag].astype(np.float32), bag.astype(np.int32), _blobs(1)


def _train_accuracy(bags, name, hp, whole_bags, lr):
  """Test accuracy of a linear softmax model after STEPS SGD steps on batches of BS rows: whole
  bags (BS / K random bags) or random rows; one jitted lax.scan."""
  x, labels, bag, (xt, yt) = bags
  rng = np.random.default_rng(3)
  if whole_bags:
    idx = np.stack([(rng.permutation(N // K)[:BS // K, None] * K + np.arange(K)).ravel()
                    for _ in range(STEPS)])
  else:
    idx = np.stack([rng.choice(N, BS, replace=False) for _ in range(STEPS)])
  fn = registry.bind('losses', dict(name=name, **hp))

  @jax.jit
  def fit(params, xs, ys, ids):
    def step(params, inp):
      xb, yb, ib = inp
      def mean_loss(p):
        pe, _ = fn(logits=xb @ p['w'] + p['b'], labels=yb, mask=jnp.ones(BS),
                   batch={'bag_id': ib})
        return jnp.mean(pe)
      g = jax.grad(mean_loss)(params)
      return jax.tree.map(lambda a, d: a - lr * d, params, g), None
    return jax.lax.scan(step, params, (xs, ys, ids))[0]

  params = fit({'w': jnp.zeros((D, C)), 'b': jnp.zeros(C)}, x[idx], labels[idx], bag[idx])
  return float(np.mean(np.argmax(xt @ params['w'] + params['b'], -1) == yt))


def test_easyllp_learns_from_shuffled_rows(bags):
  prior = bags[1].mean(0).tolist()  # the train set's class shares, exact from the bags
  acc = _train_accuracy(bags, 'easyllp', {'bag_size': K, 'prior': prior}, False, lr=0.1)
  assert acc > 0.8, acc  # majority class 0.5, chance 1/3


def test_proportion_learns_from_whole_bags_only(bags):
  acc = _train_accuracy(bags, 'proportion', {}, True, lr=2.0)
  assert acc > 0.8, acc
  # shuffled rows rarely share a bag: the bag-level signal is gone (see the module docstring)
  shuffled = _train_accuracy(bags, 'proportion', {}, False, lr=2.0)
  assert shuffled < acc - 0.2, (acc, shuffled)
