"""Weighted vote ("weighted"): a softmax over per-source weighted vote counts.

Each source j has a weight w_j; row i's posterior is

  P(y_i = c) = softmax_c( log rho_c + sum_{j: L_ij != -1} w_j 1[L_ij = c] ),

so a row nobody votes on gets the prior rho. This is the exact posterior of the symmetric
"one-coin" model (source j is right with probability a_j, else picks one of the other C - 1
classes uniformly; sources independent given y) with the weight

  w_j = log( a_j (C - 1) / (1 - a_j) ),

the log-odds of a correct vote against one particular wrong class (for C = 2 the plain log-odds
log(a_j / (1 - a_j)); Nitzan & Paroush 1982, "Optimal Decision Rules in Uncertain Dichotomous
Choice Situations"; the weighted majority of Li & Yu 2014, "Error Rate Bounds and Iterative
Weighted Majority Voting for Crowdsourcing"). A source no better than chance (a_j = 1 / C) gets
weight 0, a worse one a negative weight: its vote counts against the class it names.

Weights are given (`weights`, m numbers) or estimated from a_j = the source's agreement with the
*leave-one-out* majority vote of the other sources (the soft majority of the rows where j votes
and someone else does too; ties split evenly). Leaving j out matters for few sources: with j in
its own majority every source looks at least half right. a_j is clipped to [eps, 1 - eps] so the
weights stay finite; a source that never overlaps another gets a_j = 1 / C (weight 0).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from w2s.errors import UserError
from w2s import label_models as lm
from w2s.label_models import majority


def loo_agreement(onehot: jax.Array) -> jax.Array:
  """Each source's soft agreement with the majority vote of the others, onehot [n, m, C] -> [m]
  (1 / C for a source with no row shared with another voter)."""
  c = onehot.shape[-1]
  counts = jnp.sum(onehot, axis=1, keepdims=True)  # [n, 1, C]
  others = counts - onehot  # [n, m, C]: the votes of everyone but j
  uniform = jnp.full((c,), 1.0 / c, jnp.float32)
  mv = majority.soft_majority(others.reshape(-1, c), uniform, 'split').reshape(others.shape)
  voted = jnp.sum(onehot, axis=-1)  # [n, m]
  valid = voted * (jnp.sum(others, axis=-1) > 0)
  agree = jnp.sum(onehot * mv, axis=-1) * valid
  n_valid = jnp.sum(valid, axis=0)
  return jnp.where(n_valid > 0, jnp.sum(agree, axis=0) / jnp.maximum(n_valid, 1.0), 1.0 / c)


def log_odds_weights(accuracy: jax.Array, num_classes: int, eps: float) -> jax.Array:
  """One-coin weights log(a (C - 1) / (1 - a)) of accuracies [m], a clipped to [eps, 1 - eps]."""
  a = jnp.clip(accuracy, eps, 1.0 - eps)
  return jnp.log(a * (num_classes - 1) / (1.0 - a))


def aggregate(votes, *, num_classes: int, weights=None, prior=None,
              eps: float = 0.01) -> tuple[jax.Array, dict]:
  """Weighted vote of a vote matrix.

  Args:
    votes: int [n, m], -1 abstain, else a class in 0..C-1.
    num_classes: C.
    weights: [m] per-source weights, or None to estimate the one-coin log-odds weights.
    prior: [C] class prior rho, or None to estimate it from the votes (`vote_prior`); pass a
      uniform prior for a plain softmax of the weighted counts.
    eps: clip of the estimated accuracies, in (0, 0.5).

  Returns:
    (probs [n, C] rows summing to 1, {'weights': [m], 'prior': [C]} plus 'accuracy' [m], the
     leave-one-out agreement, when the weights were estimated).
  """
  where = 'label model weighted'
  if not 0 < eps < 0.5:
    raise UserError(f'{where}: eps={eps} must be in (0, 0.5)')
  votes = lm.check_votes(votes, num_classes, where)
  m = votes.shape[1]
  given = lm.check_prior(prior, num_classes, where)
  if weights is not None:
    w = np.asarray(weights, np.float32)
    if w.shape != (m,) or not np.all(np.isfinite(w)):
      raise UserError(f'{where}: weights={weights!r} must be {m} finite numbers, one per source '
                      '(or None to estimate them)')
    weights = jnp.asarray(w)
  return _weighted(votes, weights, given, num_classes=num_classes, eps=eps)


@functools.partial(jax.jit, static_argnames=('num_classes', 'eps'))
def _weighted(votes, weights, given, *, num_classes, eps):
  onehot = lm.one_hot_votes(votes, num_classes)  # [n, m, C]
  rho = lm.vote_prior(jnp.sum(onehot, axis=1)) if given is None else given
  diag = {}
  if weights is None:
    diag['accuracy'] = loo_agreement(onehot)
    weights = log_odds_weights(diag['accuracy'], num_classes, eps)
  # log 0 = -inf for a class the prior rules out; softmax keeps it at exactly 0.
  log_rho = jnp.where(rho > 0, jnp.log(jnp.where(rho > 0, rho, 1.0)), -jnp.inf)
  scores = log_rho + jnp.einsum('imc,m->ic', onehot, weights)
  return jax.nn.softmax(scores, axis=-1), {**diag, 'weights': weights, 'prior': rho}
