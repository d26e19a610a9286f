"""Shared numeric checks of the tests: a central finite-difference gradient and the exact equality
of two train states (a resumed run against an uninterrupted one)."""
import jax
import numpy as np


def fd_grad(fn, w: np.ndarray, h: float = 1e-5) -> np.ndarray:
  """d fn / d w by central differences (float64 w), one entry at a time."""
  g = np.zeros_like(w)
  for idx in np.ndindex(*w.shape):
    e = np.zeros_like(w)
    e[idx] = h
    g[idx] = (fn(w + e) - fn(w - e)) / (2 * h)
  return g


def assert_same_state(a, b) -> None:
  """params, extra and optimizer state of two TrainStates are bitwise equal."""
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
               (a.params, a.extra, a.opt_state), (b.params, b.extra, b.opt_state))
