"""The triplet label model (w2s/label_models/triplet.py, FlyingSquid's method): moments, |a| and
the posterior of a hand-worked 3-source example; recovery of known accuracies and class balance
from 20k synthetic rows whose sources fall silent together; a duplicated source with and without
its dependency; jit on 8 devices; input checks.

Reference numbers are worked out by hand (in the comments) or with plain numpy float64 here,
never by w2s code.
"""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from w2s import label_models as lm
from w2s import options, registry
from w2s.errors import UserError
from w2s.label_models import triplet

# --- a hand-worked example: 6 rows, 3 sources ----------------------------------------------------
# Votes (class 1 -> +1, class 0 -> -1, -1 = abstain -> 0):
#   row  votes       lambda
#   r0   1  1  1     +  +  +
#   r1   1  1  0     +  +  -
#   r2   0  1  0     -  +  -
#   r3   1 -1  1     +  0  +
#   r4   0  0 -1     -  -  0
#   r5   1  0  1     +  -  +
# M_01 over r0 r1 r2 r4 r5: (+1 +1 -1 +1 -1) / 5 = 0.2
# M_02 over r0 r1 r2 r3 r5: (+1 -1 +1 +1 +1) / 5 = 0.6
# M_12 over r0 r1 r2 r5:    (+1 -1 -1 -1) / 4 = -0.5
# |a_0| = sqrt(.2 * .6 / .5) = sqrt(.24), |a_1| = sqrt(.2 * .5 / .6) = sqrt(1 / 6),
# |a_2| = sqrt(.6 * .5 / .2) = sqrt(1.5) -> clipped to 1.
HAND = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 0], [1, -1, 1], [0, 0, -1], [1, 0, 1]])
HAND_LAM = np.where(HAND < 0, 0, 2 * HAND - 1).astype(np.float64)
HAND_ABS_A = np.array([np.sqrt(0.24), np.sqrt(1 / 6), 1.0])


def _posterior(lam, a, prior, eps=0.01):
  """numpy float64: P(Y = +1 | votes) of the symmetric model, as [n, 2]."""
  alpha = np.clip((1 + np.asarray(a, np.float64)) / 2, eps, 1 - eps)
  s = np.log(prior[1] / prior[0]) + lam @ np.log(alpha / (1 - alpha))
  p1 = 1 / (1 + np.exp(-s))
  return np.stack([1 - p1, p1], 1)


def test_registry_and_options():
  assert 'triplet' in registry.known('label_models')
  assert registry.get('label_models', 'triplet') is triplet.aggregate
  p = options.plugin('label_models', dict(name='triplet', dependencies=[(0, 1)], min_overlap=1),
                     'weak.label_model')
  probs, diag = lm.run(p, HAND, 2)
  assert probs.shape == (6, 2) and probs.dtype == np.float32
  assert diag['dependencies'].tolist() == [[False, True, False], [True, False, False],
                                           [False, False, False]]
  # 0 ~ 1 leaves every triplet with a dependent pair: no estimate, weight 0, the prior only
  assert diag['triplets'].tolist() == [0, 0, 0]
  np.testing.assert_allclose(probs, np.tile(diag['prior'], (6, 1)), rtol=1e-6)


def test_hand_moments_accuracies_and_posterior():
  m_ij, rows = triplet.moments(HAND_LAM.astype(np.float32), 'voted')
  np.testing.assert_allclose(np.asarray(m_ij)[[0, 0, 1], [1, 2, 2]], [0.2, 0.6, -0.5], rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(rows), [[6, 5, 5], [5, 5, 4], [5, 4, 5]])
  prior = [0.4, 0.6]
  probs, diag = triplet.aggregate(HAND, num_classes=2, min_overlap=1, prior=prior)
  np.testing.assert_allclose(diag['accuracy'], (1 + HAND_ABS_A) / 2, rtol=1e-5)
  assert diag['triplets'].tolist() == [1, 1, 1]
  # row r1: log(.6 / .4) + w_0 + w_1 - w_2, w = log(alpha / (1 - alpha)), alpha_2 clipped to .99
  w = np.log((1 + HAND_ABS_A) / (1 - HAND_ABS_A + 1e-300))
  w[2] = np.log(0.99 / 0.01)
  s1 = np.log(1.5) + w[0] + w[1] - w[2]
  assert float(probs[1, 1]) == pytest.approx(1 / (1 + np.exp(-s1)), rel=1e-5)
  np.testing.assert_allclose(probs, _posterior(HAND_LAM, HAND_ABS_A, prior), rtol=1e-5)
  np.testing.assert_allclose(diag['prior'], prior, rtol=1e-6)


def test_hand_prior_estimate_and_data_signs():
  # mean votes mu = (2/6, 1/5, 1/5) over n = (6, 5, 5) votes; 2 pi - 1 = sum n a mu / sum n a^2
  n, mu = np.array([6, 5, 5]), np.array([1 / 3, 0.2, 0.2])
  for signs, a in (('positive', HAND_ABS_A),
                   # M_12 < 0: the data say a_1 a_2 < 0; s = (+, -, +) is stable and has mean
                   # s |a| > 0 (s_1 = sign(.2 sqrt(.24) - .5) = -1)
                   ('data', HAND_ABS_A * [1, -1, 1])):
    b = np.sum(n * a * mu) / np.sum(n * a * a)
    pi = (1 + b) / 2
    probs, diag = triplet.aggregate(HAND, num_classes=2, min_overlap=1, signs=signs)
    np.testing.assert_allclose(diag['prior'], [1 - pi, pi], rtol=1e-5)
    np.testing.assert_allclose(diag['accuracy'], (1 + a) / 2, rtol=1e-5)
    np.testing.assert_allclose(probs, _posterior(HAND_LAM, a, [1 - pi, pi]), rtol=1e-5)


# --- synthetic votes from a known model ----------------------------------------------------------

ALPHA = np.array([0.9, 0.8, 0.7, 0.65, 0.85, 0.75])  # P(vote right | votes)
PROPENSITY = np.array([0.8, 0.6, 0.7, 0.5, 0.4, 0.9])  # P(votes | row not quiet)
PI = 0.65  # P(Y = class 1)


def _draw(n, alpha, propensity, pi, quiet, seed):
  """(votes int [n, m], y in {0, 1}): a `quiet` share of rows (drawn independently of y) where
  every source abstains, else each votes with its propensity, right with its accuracy."""
  rng = np.random.default_rng(seed)
  y = (rng.random(n) < pi).astype(int)
  right = rng.random((n, len(alpha))) < alpha
  vote = np.where(right, y[:, None], 1 - y[:, None])
  on = (rng.random((n, len(alpha))) < propensity) & (rng.random((n, 1)) >= quiet)
  return np.where(on, vote, -1), y


@pytest.fixture(scope='module')
def silent_together():
  return _draw(20_000, ALPHA, PROPENSITY, PI, quiet=0.3, seed=0)


def test_recovers_accuracies_and_balance_when_sources_fall_silent_together(silent_together):
  votes, _ = silent_together
  _, diag = triplet.aggregate(votes, num_classes=2)
  np.testing.assert_allclose(diag['accuracy'], ALPHA, atol=0.02)
  np.testing.assert_allclose(diag['prior'], [1 - PI, PI], atol=0.02)
  assert diag['triplets'].tolist() == [10] * 6  # C(5, 2) per source
  # FlyingSquid's all-row moments count the shared silence as agreement: |a| / sqrt(1 - quiet)
  _, flying = triplet.aggregate(votes, num_classes=2, moments_over='all')
  a_all = np.minimum(1, (2 * ALPHA - 1) / np.sqrt(0.7))
  np.testing.assert_allclose(2 * flying['accuracy'] - 1, a_all, atol=0.04)
  assert np.max(np.abs(flying['accuracy'] - ALPHA)) > 0.05


def test_all_row_moments_agree_when_silences_are_independent():
  votes, _ = _draw(20_000, ALPHA, PROPENSITY, PI, quiet=0.0, seed=1)
  for over in ('voted', 'all'):
    _, diag = triplet.aggregate(votes, num_classes=2, moments_over=over)
    np.testing.assert_allclose(diag['accuracy'], ALPHA, atol=0.02)


def test_data_signs_find_a_source_worse_than_chance():
  alpha = np.array([0.9, 0.8, 0.3, 0.75, 0.85])
  votes, _ = _draw(20_000, alpha, PROPENSITY[:5], PI, quiet=0.3, seed=2)
  _, diag = triplet.aggregate(votes, num_classes=2, signs='data')
  np.testing.assert_allclose(diag['accuracy'], alpha, atol=0.02)
  _, pos = triplet.aggregate(votes, num_classes=2)  # FlyingSquid's all-positive: 0.3 -> 0.7
  assert float(pos['accuracy'][2]) == pytest.approx(0.7, abs=0.02)


def test_duplicated_source_overconfident_unless_dependent():
  alpha, prop = ALPHA[:4], PROPENSITY[:4]
  votes, y = _draw(20_000, alpha, prop, PI, quiet=0.3, seed=3)
  dup = np.concatenate([votes, votes[:, :1]], 1)  # source 4 = a copy of source 0
  lam = np.where(votes < 0, 0, 2 * votes - 1).astype(np.float64)
  truth = _posterior(lam, 2 * alpha - 1, [1 - PI, PI])  # the true posterior, copy ignored
  covered = (votes >= 0).any(1)

  def overconfidence(probs):  # mean confidence - accuracy of the argmax, on covered rows
    probs = np.asarray(probs)[covered]
    return np.mean(probs.max(1)) - np.mean(probs.argmax(1) == y[covered])

  naive, d0 = triplet.aggregate(dup, num_classes=2)
  # source 0's triplets with its copy say |a_0| = 1: the median is halfway to 1
  assert float(d0['accuracy'][0]) > alpha[0] + 0.03
  assert overconfidence(naive) > 0.04
  assert np.mean(np.abs(np.asarray(naive) - truth)) > 0.05
  for deps in ([(0, 4)], 'auto'):
    probs, diag = triplet.aggregate(dup, num_classes=2, dependencies=deps)
    assert np.argwhere(np.triu(diag['dependencies'])).tolist() == [[0, 4]]
    np.testing.assert_allclose(diag['accuracy'], np.append(alpha, alpha[0]), atol=0.02)
    assert abs(overconfidence(probs)) < 0.015
    assert np.mean(np.abs(np.asarray(probs) - truth)) < 0.01
    assert float(diag['votes_used']) < 1.0  # the copy's votes were not read


def test_jit_on_8_devices_matches_eager(silent_together):
  votes, _ = silent_together
  votes = votes[:4096]
  eager, d_eager = triplet.aggregate(votes, num_classes=2, dependencies=[(0, 1)])
  mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  sharded = jax.device_put(votes.astype(np.int32), NamedSharding(mesh, P('data')))
  fn = jax.jit(functools.partial(triplet.aggregate, num_classes=2, dependencies=[(0, 1)]))
  probs, diag = fn(sharded)
  np.testing.assert_allclose(probs, eager, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(diag['accuracy'], d_eager['accuracy'], rtol=1e-5)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_classes=3), 'binary only'),
    (dict(votes=HAND[:, :2]), 'needs at least 3'),
    (dict(votes=HAND * 1.0), 'dtype float64'),
    (dict(votes=HAND + 1), 'vote 2 is out of range'),
    (dict(dependencies=[(0, 3)]), r'pairs \(i, j\) of distinct source indices in 0..2'),
    (dict(dependencies=[(1, 1)]), 'distinct source indices'),
    (dict(dependencies=[0, 1]), 'distinct source indices'),
    (dict(dependencies=5), 'distinct source indices'),
    (dict(dependencies='learn'), "use 'auto'"),
    (dict(dependency_threshold=0.0), r'must be in \(0, 1\]'),
    (dict(min_overlap=0), 'must be an int >= 1'),
    (dict(moments_over='rows'), "use 'voted' or 'all'"),
    (dict(signs='flip'), "use 'positive' or 'data'"),
    (dict(prior=[1, -1]), 'must be 2 non-negative numbers'),
    (dict(eps=0.5), r'must be in \(0, 0.5\)'),
])
def test_bad_input_is_one_line(kwargs, message):
  kwargs = {'votes': HAND, 'num_classes': 2, **kwargs}
  with pytest.raises(UserError, match=message) as e:
    triplet.aggregate(kwargs.pop('votes'), **kwargs)
  assert '\n' not in str(e.value) and str(e.value).startswith('label model triplet')
