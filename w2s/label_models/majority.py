"""Majority vote ("majority"): each example's label is the class most of its sources vote for.

The baseline label model of programmatic weak supervision (Ratner et al. 2016, "Data Programming:
Creating Large Training Sets, Quickly", NeurIPS; WRENCH's `MajorityVoting`). Abstentions (-1) do
not count. Per row i with vote counts n_ic over the non-abstaining sources:

* one class has the most votes: the one-hot of that class;
* a tie between the classes T (all with the top count): `ties='prior'` (default) gives the prior
  restricted to T and renormalised, rho_c 1[c in T] / sum_{c' in T} rho_c' (split evenly if the
  prior puts no mass on T); `ties='split'` gives 1 / |T| to each;
* no votes at all: the prior rho.

rho is given (`prior`) or estimated as the class shares of all non-abstain votes
(`w2s.label_models.vote_prior`).
"""
import functools

import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s import label_models as lm

TIES = ('prior', 'split')


def soft_majority(counts: jax.Array, prior: jax.Array, ties: str = 'prior') -> jax.Array:
  """Majority-vote soft labels [n, C] from vote counts [n, C] (see module docstring)."""
  top = jnp.max(counts, axis=-1, keepdims=True)
  covered = top > 0  # [n, 1]
  tied = ((counts == top) & covered).astype(jnp.float32)  # [n, C]: the winners
  if ties == 'prior':
    weighted = tied * prior
    mass = jnp.sum(weighted, axis=-1, keepdims=True)
    tied = jnp.where(mass > 0, weighted, tied)
  winners = tied / jnp.maximum(jnp.sum(tied, axis=-1, keepdims=True), 1e-30)
  return jnp.where(covered, winners, prior)


def aggregate(votes, *, num_classes: int, ties: str = 'prior',
              prior=None) -> tuple[jax.Array, dict]:
  """Majority vote of a vote matrix.

  Args:
    votes: int [n, m], -1 abstain, else a class in 0..C-1.
    num_classes: C.
    ties: 'prior' (tied classes share the prior's mass among them) or 'split' (evenly).
    prior: [C] class prior for ties and all-abstain rows, or None to estimate it from the votes.

  Returns:
    (probs [n, C] rows summing to 1, {'prior': [C], 'coverage': share of rows with a vote,
     'tie_rate': share of covered rows with a tie}).
  """
  if ties not in TIES:
    raise UserError(f'label model majority: ties={ties!r} is not one of {TIES}')
  votes = lm.check_votes(votes, num_classes, 'label model majority')
  given = lm.check_prior(prior, num_classes, 'label model majority')
  return _majority(votes, given, num_classes=num_classes, ties=ties)


@functools.partial(jax.jit, static_argnames=('num_classes', 'ties'))
def _majority(votes, given, *, num_classes, ties):
  counts = jnp.sum(lm.one_hot_votes(votes, num_classes), axis=1)  # [n, C]
  rho = lm.vote_prior(counts) if given is None else given
  probs = soft_majority(counts, rho, ties)
  top = jnp.max(counts, axis=-1)
  covered = top > 0
  tie = covered & (jnp.sum(counts == top[:, None], axis=-1) > 1)
  diag = {'prior': rho, 'coverage': jnp.mean(covered.astype(jnp.float32)),
          'tie_rate': jnp.sum(tie) / jnp.maximum(jnp.sum(covered), 1)}
  return probs, diag
