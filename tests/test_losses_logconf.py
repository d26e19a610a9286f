"""logconf (Burns et al. 2023): hand-computed values, hardening balance, warmup schedules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s.losses import logconf

LN = np.log
_harden = jax.jit(logconf.hardened_targets, static_argnames='method')


def _binary(p0, y1):
  p0, y1 = np.asarray(p0, np.float64), np.asarray(y1, np.float64)
  return np.stack([p0, 1 - p0], 1), np.stack([1 - y1, y1], 1)


def _loss(probs, labels, mask=None, step_frac=1.0, **hparams):
  mask = np.ones(len(probs)) if mask is None else mask
  fn = jax.jit(lambda z, y, m, s: logconf.loss(logits=z, labels=y, mask=m, step_frac=s, **hparams))
  return fn(jnp.log(jnp.asarray(probs, jnp.float32)), jnp.asarray(labels, jnp.float32),
            jnp.asarray(mask, jnp.float32), step_frac)


def test_hand_computed_binary():
  # p_0 sorted: [.2, .3, .6, .9]; mean y_1 = .5 -> t = .3 + .5 (.6 - .3) = .45 (numpy 'linear')
  # h = [0, 0, 1, 1] (class ids); alpha(1) = .5; targets .5 y + .5 h
  probs, labels = _binary([0.9, 0.6, 0.3, 0.2], [0.2, 0.4, 0.6, 0.8])
  targets = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9]])
  expected = -np.sum(targets * LN(probs), -1)
  per_example, aux = _loss(probs, labels)
  np.testing.assert_allclose(per_example, expected, rtol=1e-5)
  assert float(aux['alpha']) == 0.5
  np.testing.assert_allclose(aux['hard_prior_gap'], 0.0, atol=1e-6)


def test_threshold_tie_goes_to_class_0():
  # three values, mean y_1 = .5 -> t = median p_0 = .5 exactly: p_0 >= t is class 0.
  probs, labels = _binary([0.25, 0.5, 0.75], [0.5, 0.5, 0.5])
  h = _harden(jnp.asarray(probs, jnp.float32), jnp.asarray(labels, jnp.float32),
                               jnp.ones(3))
  np.testing.assert_array_equal(h, [[0, 1], [1, 0], [1, 0]])


def test_binary_hardening_matches_release_and_weak_balance():
  rng = np.random.default_rng(0)
  for batch_size in (16, 33, 64):
    p0, y1 = rng.uniform(size=batch_size), rng.uniform(size=batch_size) * rng.uniform()
    probs, labels = _binary(p0, y1)
    h = np.asarray(_harden(jnp.asarray(probs, jnp.float32),
                                            jnp.asarray(labels, jnp.float32), jnp.ones(batch_size)))
    t = np.quantile(p0, y1.mean())  # the release: torch.quantile(preds[:, 0], mean_weak[1])
    np.testing.assert_array_equal(h[:, 1], (p0 < t).astype(float))
    # the share hardened to class 1 is the weak labels' class-1 mass (up to one example)
    assert abs(h[:, 1].mean() - y1.mean()) <= 1 / batch_size + 1e-9


def test_padding_is_ignored_by_the_threshold():
  probs, labels = _binary([0.9, 0.6, 0.3, 0.2, 0.95, 0.99], [0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
  mask = np.array([1, 1, 1, 1, 0, 0.0])
  # Counting the padding would give prior 2/3 and t = .9 + (1/3)(.95 - .9): all real rows -> 1.
  h = _harden(jnp.asarray(probs, jnp.float32), jnp.asarray(labels, jnp.float32),
                               jnp.asarray(mask))
  np.testing.assert_array_equal(h[:4, 1], [0, 0, 1, 1])


def _biased_multiclass(rng, batch_size=256, num_classes=5, bias=5.0):
  z = rng.normal(size=(batch_size, num_classes)) * 1.5
  z[:, 0] += bias  # the student's argmax puts most of the batch in class 0
  labels = rng.dirichlet(np.ones(num_classes) * 0.5, size=batch_size)
  return jax.nn.softmax(jnp.asarray(z, jnp.float32)), jnp.asarray(labels, jnp.float32)


def test_multiclass_prior_hardening_matches_weak_prior():
  rng = np.random.default_rng(1)
  for num_classes in (3, 5, 10):
    probs, labels = _biased_multiclass(rng, num_classes=num_classes)
    prior = np.asarray(labels).mean(0)
    h = np.asarray(_harden(probs, labels, jnp.ones(256)))
    h_argmax = np.asarray(_harden(probs, labels, jnp.ones(256), method='argmax'))
    np.testing.assert_array_equal(h.sum(-1), 1.0)
    assert np.abs(h.mean(0) - prior).max() < 0.02
    assert h_argmax[:, 0].mean() > 0.85  # what plain argmax does with this student
    np.testing.assert_array_equal(h_argmax, np.eye(num_classes)[np.asarray(probs).argmax(-1)])


def test_multiclass_hardening_ignores_padding():
  rng = np.random.default_rng(2)
  probs, labels = _biased_multiclass(rng, batch_size=64, num_classes=4)
  pad_probs = jnp.concatenate([probs, jnp.tile(jnp.asarray([[0.97, 0.01, 0.01, 0.01]]), (16, 1))])
  pad_labels = jnp.concatenate([labels, jnp.tile(jnp.asarray([[1.0, 0, 0, 0]]), (16, 1))])
  mask = jnp.concatenate([jnp.ones(64), jnp.zeros(16)])
  h_pad = _harden(pad_probs, pad_labels, mask)
  np.testing.assert_array_equal(h_pad[:64], _harden(probs, labels, jnp.ones(64)))


def test_sinkhorn_reduces_to_release_rule_for_two_classes():
  """The multi-class rule is the same balanced assignment the binary rule solves exactly."""
  rng = np.random.default_rng(3)
  p0, y1 = rng.uniform(size=256), rng.uniform(size=256) * 0.6
  probs, labels = _binary(p0, y1)
  probs = jnp.asarray(probs, jnp.float32)
  h_release = _harden(probs, jnp.asarray(labels, jnp.float32), jnp.ones(256))
  h_sinkhorn = logconf.balanced_assignment(jnp.log(probs), jnp.asarray(labels.mean(0), jnp.float32),
                                           jnp.ones(256))
  assert np.mean(np.all(np.asarray(h_release) == np.asarray(h_sinkhorn), -1)) >= 0.98


@pytest.mark.parametrize('step_frac, default, faithful', [
    (0.0, 0.0, 0.0),
    (0.02, 0.1, 0.01),    # default: .5 * .02 / .1; release: .02 * .5
    (0.05, 0.25, 0.025),
    (0.1, 0.5, 0.05),     # the release reaches only warmup_frac * aux_coef ...
    (0.1001, 0.5, 0.5),   # ... and then jumps to aux_coef
    (0.5, 0.5, 0.5),
    (1.0, 0.5, 0.5),
])
def test_warmup_schedules(step_frac, default, faithful):
  np.testing.assert_allclose(logconf.aux_coefficient(step_frac), default, rtol=1e-6)
  np.testing.assert_allclose(logconf.aux_coefficient(step_frac, faithful=True), faithful, rtol=1e-6)


def test_schedule_is_traced_and_reaches_the_loss():
  probs, labels = _binary([0.9, 0.6, 0.3, 0.2], [0.2, 0.4, 0.6, 0.8])
  for faithful, alpha in ((False, 0.25), (True, 0.025)):
    per_example, aux = _loss(probs, labels, step_frac=jnp.float32(0.05), faithful=faithful)
    np.testing.assert_allclose(aux['alpha'], alpha, rtol=1e-6)
    h = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    expected = -np.sum(((1 - alpha) * labels + alpha * h) * LN(probs), -1)
    np.testing.assert_allclose(per_example, expected, rtol=1e-5)
  _, aux = _loss(probs, labels, step_frac=0.3, aux_coef=0.75, warmup_frac=0.6)
  np.testing.assert_allclose(aux['alpha'], 0.375, rtol=1e-6)
  _, aux = _loss(probs, labels, step_frac=0.0, warmup_frac=0.0)
  np.testing.assert_allclose(aux['alpha'], 0.5, rtol=1e-6)
