"""Label models (w2s/label_models/): majority and weighted vote against hand-computed values,
Dawid-Skene recovering known confusion matrices, all-abstain rows, jit, and input checks.

Reference numbers are written out by hand or computed with plain numpy here, never by w2s code.
"""
import functools

import jax
import numpy as np
import pytest

from w2s import label_models as lm
from w2s import options, registry
from w2s.errors import UserError

NAMES = ['dawid_skene', 'majority', 'triplet', 'weighted']
# the models for C > 2 classes (triplet is binary only; tests/test_label_model_triplet.py has its
# jit-vs-eager and recovery checks on binary votes)
MULTICLASS = [n for n in NAMES if n != 'triplet']

# C = 3, m = 3 sources; per-class vote totals (non-abstain) 4 / 3 / 3 -> vote prior [.4, .3, .3].
L = np.array([[0, 0, 1],      # 2 votes for 0: one-hot 0
              [0, 1, -1],     # tie {0, 1}
              [-1, -1, -1],   # nobody votes: the prior
              [2, -1, 2],     # one-hot 2
              [1, 2, 0]])     # three-way tie
PRIOR = [0.4, 0.3, 0.3]


def _aggregate(name, votes=L, num_classes=3, **hp):
  return registry.get('label_models', name)(votes, num_classes=num_classes, **hp)


def _softmax(s):
  e = np.exp(np.asarray(s, np.float64) - np.max(s, -1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_registry_and_options():
  assert registry.known('label_models') == NAMES
  with pytest.raises(UserError, match="unknown label model 'nope'; known: dawid_skene"):
    registry.get('label_models', 'nope')
  with pytest.raises(UserError, match="label model 'majority' has no option 'tie'"):
    options.plugin('label_models', dict(name='majority', tie='split'), 'label_model')
  with pytest.raises(UserError, match="'votes' is supplied by w2s"):
    options.plugin('label_models', dict(name='majority', votes=L), 'label_model')
  p = options.plugin('label_models', dict(name='majority', ties='split'), 'label_model')
  probs, diag = lm.run(p, L, 3)
  assert isinstance(probs, np.ndarray) and probs.dtype == np.float32
  np.testing.assert_allclose(probs[1], [0.5, 0.5, 0.0], rtol=1e-6)
  assert isinstance(diag['prior'], np.ndarray)


# --- majority ------------------------------------------------------------------------------------

@pytest.mark.parametrize('ties, prior, expected', [
    # ties to the (vote) prior restricted to the tied classes: {0, 1} -> [.4, .3] / .7
    ('prior', None, [[1, 0, 0], [4 / 7, 3 / 7, 0], PRIOR, [0, 0, 1], PRIOR]),
    ('split', None, [[1, 0, 0], [0.5, 0.5, 0], PRIOR, [0, 0, 1], [1 / 3] * 3]),
    ('prior', [0.2, 0.2, 0.6], [[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.2, 0.6], [0, 0, 1],
                                [0.2, 0.2, 0.6]]),
    # the prior gives the tied classes {0, 1} no mass: split evenly instead
    ('prior', [0, 0, 1], [[1, 0, 0], [0.5, 0.5, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]]),
    ('prior', [2, 1, 1], [[1, 0, 0], [2 / 3, 1 / 3, 0], [0.5, 0.25, 0.25], [0, 0, 1],
                          [0.5, 0.25, 0.25]]),  # a given prior is normalised
])
def test_majority_hand_values(ties, prior, expected):
  probs, diag = _aggregate('majority', ties=ties, prior=prior)
  np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-7)
  assert float(diag['coverage']) == pytest.approx(4 / 5)
  assert float(diag['tie_rate']) == pytest.approx(2 / 4)
  if prior is None:
    np.testing.assert_allclose(diag['prior'], PRIOR, rtol=1e-6)


def test_majority_of_a_matrix_nobody_votes_on_is_uniform():
  probs, diag = _aggregate('majority', votes=np.full((3, 2), -1), num_classes=4)
  np.testing.assert_allclose(probs, np.full((3, 4), 0.25), rtol=1e-6)
  assert float(diag['coverage']) == 0.0 and float(diag['tie_rate']) == 0.0


# --- weighted ------------------------------------------------------------------------------------

def test_weighted_given_weights_is_a_softmax_of_weighted_counts():
  w = [1.0, 2.0, 0.5]
  probs, diag = _aggregate('weighted', weights=w, prior=[1, 1, 1])
  expected = _softmax([[3.0, 0.5, 0], [1, 2, 0], [0, 0, 0], [0, 0, 1.5], [0.5, 1, 2]])
  np.testing.assert_allclose(probs, expected, rtol=1e-5)
  np.testing.assert_allclose(diag['weights'], w, rtol=1e-6)
  assert 'accuracy' not in diag
  # with the vote prior the log prior adds to every row; the all-abstain row is the prior itself
  probs, _ = _aggregate('weighted', weights=w)
  np.testing.assert_allclose(probs, _softmax(np.log(PRIOR) + np.log(expected)), rtol=1e-5)
  np.testing.assert_allclose(probs[2], PRIOR, rtol=1e-5)
  # a negative weight counts against the class a source names
  probs, _ = _aggregate('weighted', weights=[-1.0, 0.0, 0.0], prior=[1, 1, 1])
  np.testing.assert_allclose(probs[0], _softmax([-1.0, 0, 0]), rtol=1e-5)


def test_weighted_estimates_leave_one_out_log_odds():
  # Agreement of each source with the soft majority of the *other* sources, on rows where both:
  # source 0: rows 0 (others {0, 1}: .5), 1 (others 1: 0), 3 (others 2: 1), 4 (others {2, 0}: 0)
  # source 1: rows 0 ({0, 1}: .5), 1 (0: 0), 4 ({1, 0}: 0);  source 2: rows 0 (0: 0), 3 (2: 1),
  # 4 ({1, 2}: 0).  One-coin weights log(a (C - 1) / (1 - a)).
  a = np.array([1.5 / 4, 0.5 / 3, 1 / 3])
  probs, diag = _aggregate('weighted')
  np.testing.assert_allclose(diag['accuracy'], a, rtol=1e-6)
  w = np.log(a * 2 / (1 - a))
  np.testing.assert_allclose(diag['weights'], w, rtol=1e-5, atol=1e-6)
  onehot = np.eye(3)[np.where(L < 0, 0, L)] * (L >= 0)[..., None]
  expected = _softmax(np.log(PRIOR) + np.einsum('imc,m->ic', onehot, w))
  np.testing.assert_allclose(probs, expected, rtol=1e-5)


def test_weighted_source_without_overlap_gets_zero_weight_and_clipping():
  probs, diag = _aggregate('weighted', votes=np.array([[0, -1], [-1, 1]]), num_classes=2)
  np.testing.assert_allclose(diag['accuracy'], [0.5, 0.5])
  np.testing.assert_allclose(diag['weights'], [0.0, 0.0], atol=1e-7)
  np.testing.assert_allclose(probs, [[0.5, 0.5], [0.5, 0.5]], rtol=1e-6)  # the vote prior
  # two sources that always agree: a = 1, clipped to 1 - eps
  _, diag = _aggregate('weighted', votes=np.array([[0, 0], [1, 1]]), num_classes=2, eps=0.1)
  np.testing.assert_allclose(diag['weights'], [np.log(9.0)] * 2, rtol=1e-5)


# --- Dawid-Skene on synthetic votes with known confusion matrices ---------------------------------

def _confusion(acc, c=3):
  p = np.full((c, c), (1 - acc) / (c - 1))
  np.fill_diagonal(p, acc)
  return p


PIS = np.stack([_confusion(0.85), _confusion(0.75),
                [[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]],   # asymmetric
                [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]],   # adversarial: swaps 0 and 1
                _confusion(0.65)])
RHO = np.array([0.5, 0.3, 0.2])
COVERAGE = np.array([0.8, 0.9, 0.7, 0.8, 0.9])


def _draw(pis, y, rng):
  """Each source's output per row from its rows pis[j][true class] (an output past the last
  class, if the rows have one, is an abstention: -1)."""
  votes = np.empty((len(y), len(pis)), np.int64)
  c = pis.shape[1]
  for j, pi in enumerate(pis):
    out = (np.cumsum(pi[y], axis=1) > rng.random(len(y))[:, None]).argmax(1)
    votes[:, j] = np.where(out >= c, -1, out)
  return votes


@pytest.fixture(scope='module')
def synthetic():
  """n = 4000 votes of the 5 sources above (each abstaining at random), the last 100 rows
  all-abstain; (votes, hidden labels)."""
  n = 4000
  rng = np.random.default_rng(0)
  y = rng.choice(3, size=n, p=RHO)
  votes = _draw(PIS, y, rng)
  votes = np.where(rng.random((5, n)).T < COVERAGE, votes, -1)
  votes[-100:] = -1
  return votes, y


def test_dawid_skene_recovers_known_confusions_and_beats_majority(synthetic):
  votes, y = synthetic
  _, diag = _aggregate('dawid_skene', votes)
  np.testing.assert_allclose(diag['confusion'], PIS, atol=0.05)
  np.testing.assert_allclose(diag['prior'], RHO, atol=0.03)
  assert bool(diag['converged']) and 1 < int(diag['iterations']) < 100
  voted = np.any(votes >= 0, axis=1)
  acc = {name: np.mean(np.asarray(_aggregate(name, votes)[0]).argmax(1)[voted] == y[voted])
         for name in MULTICLASS}
  assert acc['dawid_skene'] > acc['majority'] + 0.05, acc
  assert acc['weighted'] > acc['majority'], acc
  _, w = _aggregate('weighted', votes)
  assert np.argmin(w['weights']) == 3 and w['weights'][3] < 0  # the adversarial source


# Keyword rules vote one class or abstain: [source, true class, (vote 0, vote 1, abstain)]
PI_ABSTAIN = np.array([
    [[0.02, 0.10, 0.88], [0.03, 0.62, 0.35]],   # fires for class 1
    [[0.01, 0.15, 0.84], [0.02, 0.45, 0.53]],   # fires for class 1, noisier
    [[0.55, 0.05, 0.40], [0.12, 0.02, 0.86]],   # fires for class 0
    [[0.40, 0.02, 0.58], [0.06, 0.01, 0.93]]])  # fires for class 0
RHO_ABSTAIN = np.array([0.6, 0.4])


def test_dawid_skene_with_modelled_abstentions_recovers_them_and_beats_skipping():
  """Abstentions that depend on the class (one-class rules): abstain='model' recovers the
  [C, C + 1] confusions, silence included, and labels far better than skipping abstentions,
  which cannot tell a one-class rule's evidence from nothing."""
  n = 6000
  rng = np.random.default_rng(0)
  y = rng.choice(2, size=n, p=RHO_ABSTAIN)
  votes = _draw(PI_ABSTAIN, y, rng)
  post, diag = _aggregate('dawid_skene', votes, num_classes=2, abstain='model')
  assert diag['confusion'].shape == (4, 2, 3)
  np.testing.assert_allclose(diag['confusion'], PI_ABSTAIN, atol=0.05)  # 0.029 measured
  np.testing.assert_allclose(diag['prior'], RHO_ABSTAIN, atol=0.03)
  acc = lambda p: np.mean(np.asarray(p).argmax(1) == y)
  skip, _ = _aggregate('dawid_skene', votes, num_classes=2)
  vote, _ = _aggregate('majority', votes, num_classes=2)
  assert acc(post) > acc(skip) + 0.15, (acc(post), acc(skip))   # 0.84 vs 0.58 measured
  assert acc(post) > acc(vote), (acc(post), acc(vote))          # vs 0.81
  # a silent row: rho_c prod_j P(j abstains | c), normalised (hand-computed from the fit)
  silent = np.flatnonzero((votes < 0).all(1))[0]
  pi, rho = np.asarray(diag['confusion'], np.float64), np.asarray(diag['prior'], np.float64)
  joint = rho * np.prod(pi[:, :, 2], axis=0)
  np.testing.assert_allclose(post[silent], joint / joint.sum(), rtol=1e-4)
  with pytest.raises(UserError, match="abstain='maybe'"):
    _aggregate('dawid_skene', votes, num_classes=2, abstain='maybe')


def test_dawid_skene_all_abstain_rows_get_the_fitted_prior(synthetic):
  votes, _ = synthetic
  post, diag = _aggregate('dawid_skene', votes)
  np.testing.assert_allclose(post[-100:], np.broadcast_to(diag['prior'], (100, 3)), rtol=1e-5)
  for name in ('majority', 'weighted'):
    probs, d = _aggregate(name, votes)
    np.testing.assert_allclose(probs[-100:], np.broadcast_to(d['prior'], (100, 3)), rtol=1e-5)


def test_dawid_skene_iterations_and_likelihood(synthetic):
  votes, _ = synthetic
  _, one = _aggregate('dawid_skene', votes, max_iters=1)
  assert int(one['iterations']) == 1 and not bool(one['converged'])
  _, full = _aggregate('dawid_skene', votes)
  assert float(full['log_likelihood']) > float(one['log_likelihood'])
  _, loose = _aggregate('dawid_skene', votes, tol=1e9)  # stops at the first change it measures
  assert int(loose['iterations']) == 2 and bool(loose['converged'])


def test_dawid_skene_perfect_sources_give_confident_posteriors():
  votes = np.tile(np.array([[0], [1], [2], [1]]), (25, 4))  # 4 sources, always right, C = 3
  post, diag = _aggregate('dawid_skene', votes)
  np.testing.assert_allclose(post, np.eye(3)[votes[:, 0]], atol=1e-3)
  for j in range(4):
    assert np.all(np.diag(diag['confusion'][j]) > 0.99)


# --- shared behaviour -------------------------------------------------------------------------

@pytest.mark.parametrize('name', MULTICLASS)
def test_jit_matches_eager_and_rows_sum_to_one(name):
  rng = np.random.default_rng(1)
  votes = rng.integers(-1, 4, size=(64, 6))
  votes[:5] = -1
  eager, eager_diag = _aggregate(name, votes, num_classes=4)
  fn = jax.jit(functools.partial(registry.get('label_models', name), num_classes=4))
  jitted, jitted_diag = fn(votes)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.sum(jitted, -1), 1.0, rtol=1e-5)
  assert np.all(np.asarray(jitted) >= 0)
  for key in eager_diag:
    np.testing.assert_allclose(jitted_diag[key], eager_diag[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('votes, num_classes, hp, match', [
    (L.astype(np.float32), 3, {}, 'dtype float32; pass an integer matrix'),
    (L[0], 3, {}, r'shape \(3,\); expected \[n examples, m sources\]'),
    (np.zeros((4, 0), np.int32), 3, {}, 'at least one example and one source'),
    (L, 2, {}, 'vote 2 is out of range'),
    (L - 1, 3, {}, 'vote -2 is out of range'),
    (L, 1, {}, 'num_classes=1 must be an int >= 2'),
    (L, 3, {'prior': [0.5, 0.5]}, 'prior=.* must be 3 non-negative numbers'),
    (L, 3, {'prior': [1.0, -0.5, 0.5]}, 'must be 3 non-negative numbers'),
])
@pytest.mark.parametrize('name', ['majority', 'weighted'])
def test_bad_input_is_one_user_error(name, votes, num_classes, hp, match):
  with pytest.raises(UserError, match=match):
    _aggregate(name, votes, num_classes, **hp)


@pytest.mark.parametrize('name, hp, match', [
    ('dawid_skene', {}, 'out of range'),
    ('majority', {'ties': 'random'}, "ties='random' is not one of"),
    ('weighted', {'weights': [1.0, 2.0]}, 'must be 3 finite numbers, one per source'),
    ('weighted', {'eps': 0.5}, r'eps=0.5 must be in \(0, 0.5\)'),
    ('dawid_skene', {'max_iters': 0}, 'max_iters=0 must be an int >= 1'),
    ('dawid_skene', {'smoothing': 0.0}, 'smoothing=0.0 must be > 0'),
])
def test_bad_hparams_are_user_errors(name, hp, match):
  votes = L + 1 if match == 'out of range' else L
  with pytest.raises(UserError, match=match):
    _aggregate(name, votes, **hp)


def test_check_probs_refuses_a_broken_label_model():
  with pytest.raises(UserError, match='not \\[2, 2\\] non-negative rows summing to 1'):
    lm.check_probs(np.array([[0.5, 0.6], [0.5, 0.5]]), 2, 2, 'label_model')
  probs = lm.check_probs(np.array([[0.25, 0.75]]), 1, 2, 'label_model')
  assert probs.dtype == np.float32
