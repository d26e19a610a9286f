"""Label models: many weak sources' votes -> one soft label per example (programmatic weak
supervision, as benchmarked in WRENCH: Zhang et al. 2021, "WRENCH: A Comprehensive Benchmark for
Weak Supervision", arXiv:2109.11377).

A label model is a module here (or a dotted path `pkg.mod:fn`) whose entry point

    aggregate(votes, *, num_classes, **hparams) -> (probs [n, C], diagnostics dict)

reads a vote matrix `votes` int [n, m] (n examples, m sources; -1 = the source abstains, else a
class in 0..C-1) and returns soft labels whose rows sum to 1, plus arrays for inspection (the
prior used, fitted source weights or confusion matrices, iterations). The posterior is a weak label
like any other: it can be the `label` [N, C] of a training split. A config names one as
`label_model = dict(name='dawid_skene', max_iters=100)`.

Every entry point is a pure JAX function: `jax.jit(functools.partial(aggregate, num_classes=C))`
works. Values are range-checked only on concrete input (outside jit); traced input is checked for
dtype and shape only, and an out-of-range vote would then count as an abstention.
"""
import jax
import jax.numpy as jnp
import numpy as np

from w2s.errors import UserError

ABSTAIN = -1


def check_votes(votes, num_classes, where: str) -> jax.Array:
  """`votes` as int32 [n, m], or a UserError saying what is wrong with it."""
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
      or num_classes < 2:
    raise UserError(f'{where}: num_classes={num_classes!r} must be an int >= 2')
  if not hasattr(votes, 'dtype'):
    votes = np.asarray(votes)
  if not jnp.issubdtype(votes.dtype, jnp.integer):
    raise UserError(f'{where}: votes have dtype {votes.dtype}; pass an integer matrix [n, m] '
                    f'with -1 for an abstention and 0..{num_classes - 1} for a class')
  if votes.ndim != 2:
    raise UserError(f'{where}: votes have shape {tuple(votes.shape)}; expected [n examples, '
                    'm sources]')
  n, m = votes.shape
  if m == 0 or n == 0:
    raise UserError(f'{where}: votes have shape {(n, m)}; need at least one example and one '
                    'source (column)')
  if not isinstance(votes, jax.core.Tracer):
    lo, hi = int(np.min(votes)), int(np.max(votes))
    if lo < ABSTAIN or hi >= num_classes:
      bad = lo if lo < ABSTAIN else hi
      raise UserError(f'{where}: vote {bad} is out of range; votes must be -1 (abstain) or a '
                      f'class in 0..{num_classes - 1}')
  return jnp.asarray(votes, jnp.int32)


def one_hot_votes(votes: jax.Array, num_classes: int) -> jax.Array:
  """[n, m] votes -> float32 [n, m, C] indicators; an abstention (-1) is an all-zero row."""
  return jax.nn.one_hot(votes, num_classes, dtype=jnp.float32)


def vote_prior(counts: jax.Array) -> jax.Array:
  """Class shares of all non-abstain votes, counts [n, C] -> [C]; uniform if nobody voted.

  This is the distribution of the votes, not of the labels: a class whose sources fire more often
  gets more mass. Give the prior explicitly when it is known."""
  total = jnp.sum(counts, axis=0)
  c = counts.shape[-1]
  return jnp.where(jnp.sum(total) > 0, total / jnp.maximum(jnp.sum(total), 1.0), 1.0 / c)


def check_prior(prior, num_classes: int, where: str):
  """A given class prior as float32 [C] summing to 1 (None stays None), or a UserError."""
  if prior is None:
    return None
  p = np.asarray(prior, np.float64)
  if p.shape != (num_classes,) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
    raise UserError(f'{where}: prior={prior!r} must be {num_classes} non-negative numbers with a '
                    'positive sum (or None to estimate it from the votes)')
  return jnp.asarray(p / p.sum(), jnp.float32)


def check_probs(probs, n: int, num_classes: int, where: str) -> np.ndarray:
  """A label model's output as float32 numpy [n, C] with rows summing to 1, or a UserError."""
  probs = np.asarray(probs, np.float32)
  if probs.shape != (n, num_classes) or not np.all(np.isfinite(probs)) or np.any(probs < 0) \
      or not np.allclose(probs.sum(-1), 1.0, atol=1e-4):
    raise UserError(f'{where}: the label model returned {probs.shape} probabilities that are not '
                    f'[{n}, {num_classes}] non-negative rows summing to 1; fix its aggregate()')
  return probs


def run(p, votes, num_classes: int, where: str = 'label_model') -> tuple[np.ndarray, dict]:
  """Applies a resolved plug-in `p` (`w2s.options.plugin('label_models', spec, where)`) to the
  votes: (probs float32 numpy [n, C], diagnostics as numpy). Its errors name `where` (the config
  section, e.g. 'weak.label_model')."""
  from w2s import options
  votes = np.asarray(votes)
  try:
    probs, diag = options.build(p, where, votes=votes, num_classes=num_classes)
  except UserError as e:
    if str(e).startswith(where):
      raise
    raise UserError(f'{where}: {e}') from e
  probs = check_probs(probs, votes.shape[0], num_classes, where)
  return probs, jax.tree.map(np.asarray, dict(diag))
