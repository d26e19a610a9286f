"""Triplet method ("triplet"): FlyingSquid's closed-form label model, with correlated rules.

Fu et al. 2020, "Fast and Three-rious: Speeding Up Weak Supervision with Triplet Methods" (ICML;
HazyResearch/flyingsquid). Binary only (C = 2). Votes become lambda_i in {-1, 0, +1} (class 0 ->
-1, class 1 -> +1, abstain -> 0) and the label Y in {-1, +1}. The model:

* an abstention says nothing about Y (which rules speak may be arbitrarily correlated: the
  Rotten Tomatoes rules fall silent together);
* a voting source is right with a probability that does not depend on the class,
  P(lambda_i = Y | Y, lambda_i != 0) = (1 + a_i) / 2, a_i = E[lambda_i Y | lambda_i != 0];
* votes are independent given Y (and the pattern of who votes), except within a dependency.

Then for two sources the second moment over the rows where both vote is

  M_ij = E[lambda_i lambda_j | lambda_i lambda_j != 0] = a_i a_j,

whatever the class balance and however the silences are correlated, and any triplet i, j, k of
mutually independent sources gives |a_i| = sqrt(|M_ij M_ik / M_jk|) (FlyingSquid computes its
moments over all rows, abstentions as 0; that is the same estimate only when the sources fall
silent independently, so the moments here are over the rows where the pair votes). Per source
|a_i| is the median over every valid triplet (FlyingSquid's `triplet_median`): j != k, both
different from i, each of the three pairs voting together on >= `min_overlap` rows, M_jk != 0,
and no two of i, j, k dependent; clipped to [0, 1]. A source with no valid triplet gets a_i = 0
(weight 0: its votes are ignored; `triplets` in the diagnostics says how many each had).

Signs: by default every a_i > 0 (each source better than random: FlyingSquid's `all_positive`).
With `signs='data'` (M_ij = a_i a_j fixes them up to one global flip): s_i <- sign(sum_j M_ij
|a_j| s_j) over the usable pairs, from s = +1, m times; then the flip that makes the mean a_i
positive (better than random on average). On one-sided rules (a rule that only ever votes
"fresh") the symmetric model reads a "fresh" rule and a "rotten" rule that always disagree as
one of them always wrong, and 'data' may then flip a whole side: keep 'positive' there.

Class balance: E[lambda_i | lambda_i != 0] = a_i (2 pi - 1) with pi = P(Y = +1), so 2 pi - 1 is
the vote-count-weighted least-squares fit sum_i n_i a_i mu_i / sum_i n_i a_i^2 (n_i votes, mean
vote mu_i), clipped to [2 eps - 1, 1 - 2 eps]; or `prior` given.

Posterior (the weighted vote of `weighted.py` with the model's exact weights):

  log P(Y = +1 | votes) / P(Y = -1 | votes) = log(pi / (1 - pi)) + sum_{i used} lambda_i w_i,
  w_i = log(alpha_i / (1 - alpha_i)),  alpha_i = (1 + a_i) / 2 clipped to [eps, 1 - eps].

Dependencies (`dependencies=[(i, j), ...]`, or 'auto'): a dependent pair is never in one triplet
(as in FlyingSquid, whose triplets are separated by Y in the graph), and in the posterior each
connected component of the dependency graph speaks once per row: with the vote of its member of
highest |a| among those voting on that row (ties to the lower index). This is the simplest
treatment that stays correct for any dependence within a component (the posterior given the
votes it uses is exact; it discards the others, where FlyingSquid would fit the component's
joint distribution as a clique); for a duplicated source it is exactly the model without the
copy. 'auto' learns the pairs from the abstention patterns: i ~ j when they vote together on
>= `min_overlap` rows and their overlap above chance is at least `dependency_threshold` of the
largest possible,

  (P(i, j vote) - p_i p_j) / (min(p_i, p_j) - p_i p_j) >= dependency_threshold,

probabilities over the rows at least one source votes on (1 = one rule speaks only when the
other does, as `strong_praise` inside `praise_words`; 0 = independent). Counting only covered
rows discounts the silence every source shares (a review with no sentiment word at all), which
the co-voting moments are immune to; over all rows, 30% of rows silent for everyone makes
independent sources of propensity 0.6-0.8 look 0.5-0.75 dependent. Abstention overlap is a
proxy: it flags rules built from shared keywords, whose votes then also agree beyond what Y
explains (on co-voting rows two one-sided rules always agree, so their votes cannot show it).

Pure JAX: `jax.jit(functools.partial(aggregate, num_classes=2))` works (the dependency list and
prior are Python values, checked on the host).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from w2s.errors import UserError
from w2s import label_models as lm

WHERE = 'label model triplet'


def moments(lam: jax.Array, over: str):
  """Pairwise second moments of lam float [n, m] in {-1, 0, 1}: (M [m, m], rows [m, m] where
  both vote). over='voted': M_ij = E[lam_i lam_j | both vote] (0 where they never do);
  over='all': E[lam_i lam_j] over all n rows (FlyingSquid's, abstentions as 0)."""
  on = jnp.abs(lam)
  rows = on.T @ on
  total = rows if over == 'voted' else jnp.float32(lam.shape[0])
  return lam.T @ lam / jnp.maximum(total, 1.0), rows


def auto_dependencies(rows: jax.Array, n, threshold, min_overlap) -> jax.Array:
  """Pairs whose voting rows overlap far above chance (module docstring): rows [m, m] co-voting
  counts, n the rows with any vote -> bool [m, m], symmetric, False on the diagonal."""
  n = jnp.maximum(n, 1)
  p = jnp.diag(rows) / n
  both = rows / n
  chance = jnp.outer(p, p)
  most = jnp.minimum(p[:, None], p[None, :]) - chance
  excess = jnp.where(most > 0, (both - chance) / jnp.where(most > 0, most, 1.0), 0.0)
  return (excess >= threshold) & (rows >= min_overlap) & ~jnp.eye(p.shape[0], dtype=bool)


def triplet_accuracies(m_ij: jax.Array, usable: jax.Array):
  """|a| [m] as the median over valid triplets, and the number of unordered triplets [m].

  m_ij [m, m] moments, usable [m, m] bool: the pair may share a triplet (enough co-voting rows,
  not dependent, i != j)."""
  cand = jnp.sqrt(jnp.abs(m_ij[:, :, None] * m_ij[:, None, :]
                          / jnp.where(m_ij != 0, m_ij, 1.0)[None]))  # [i, j, k]
  valid = usable[:, :, None] & usable[:, None, :] & (usable & (m_ij != 0))[None]
  m = m_ij.shape[0]
  med = jnp.nanmedian(jnp.where(valid, cand, jnp.nan).reshape(m, m * m), axis=1)
  count = jnp.sum(valid, axis=(1, 2)) // 2  # (j, k) and (k, j) are one triplet
  return jnp.where(count > 0, jnp.clip(med, 0.0, 1.0), 0.0), count


def recover_signs(m_ij: jax.Array, usable: jax.Array, abs_a: jax.Array) -> jax.Array:
  """Signs s [m] with sign(M_ij) = s_i s_j as far as the data say, mean(s |a|) >= 0."""
  weights = jnp.where(usable, m_ij, 0.0) * abs_a[None, :]

  def step(_, s):
    vote = weights @ s
    return jnp.where(vote != 0, jnp.sign(vote), s)

  s = jax.lax.fori_loop(0, m_ij.shape[0], step, jnp.ones_like(abs_a))
  return jnp.where(jnp.sum(s * abs_a) < 0, -s, s)


def components(dep: jax.Array) -> jax.Array:
  """Connected components of a dependency graph: bool [m, m] -> bool [m, m], reach[i, j] iff i
  and j are linked by a chain of dependencies (reflexive)."""
  m = dep.shape[0]
  reach = dep | jnp.eye(m, dtype=bool)
  for _ in range(max(1, int(np.ceil(np.log2(max(m, 2)))))):  # path lengths double per squaring
    r = reach.astype(jnp.float32)
    reach = (r @ r) > 0
  return reach


def used_votes(on: jax.Array, abs_a: jax.Array, comp: jax.Array) -> jax.Array:
  """on [n, m] bool -> [n, m] bool: per row, each component's voting member of highest |a|
  (ties to the lower index)."""
  m = abs_a.shape[0]
  idx = jnp.arange(m)
  better = (abs_a[None, :] > abs_a[:, None]) | ((abs_a[None, :] == abs_a[:, None])
                                                 & (idx[None, :] < idx[:, None]))  # [i, j]
  rival = (comp & better & ~jnp.eye(m, dtype=bool)).astype(jnp.float32)
  beaten = (on.astype(jnp.float32) @ rival.T) > 0  # [n, i]: a better member of i's votes
  return on & ~beaten


@functools.partial(jax.jit, static_argnames=('auto', 'over', 'signs'))
def fit(votes, dep, prior, *, auto: bool, over: str, signs: str, threshold, min_overlap,
        eps) -> dict:
  """The triplet label model on checked votes int32 [n, m] (module docstring). dep: bool [m, m]
  given dependencies (ignored with `auto`); prior: [2] or None."""
  n = votes.shape[0]
  lam = jnp.where(votes < 0, 0.0, 2.0 * votes - 1.0).astype(jnp.float32)
  on = votes >= 0
  m_ij, rows = moments(lam, over)
  if auto:
    dep = auto_dependencies(rows, jnp.sum(jnp.any(on, axis=1)), threshold, min_overlap)
  m = votes.shape[1]
  usable = (rows >= min_overlap) & ~dep & ~jnp.eye(m, dtype=bool)
  abs_a, count = triplet_accuracies(m_ij, usable)
  if over == 'all':  # |E[lam_i Y]| = p_i |a_i|: back to the accuracy given a vote
    p = jnp.diag(rows) / n
    abs_a = jnp.where(p > 0, jnp.clip(abs_a / jnp.where(p > 0, p, 1.0), 0.0, 1.0), 0.0)
  a = abs_a if signs == 'positive' else recover_signs(m_ij, usable, abs_a) * abs_a
  alpha = jnp.clip((1.0 + a) / 2.0, eps, 1.0 - eps)
  w = jnp.log(alpha / (1.0 - alpha))
  if prior is None:
    n_i = jnp.diag(rows)
    mu = jnp.sum(lam, axis=0) / jnp.maximum(n_i, 1.0)
    den = jnp.sum(n_i * a * a)
    b = jnp.where(den > 0, jnp.sum(n_i * a * mu) / jnp.where(den > 0, den, 1.0), 0.0)
    pi = (1.0 + jnp.clip(b, 2 * eps - 1.0, 1.0 - 2 * eps)) / 2.0
    prior = jnp.stack([1.0 - pi, pi])
  used = used_votes(on, abs_a, components(dep))
  # log 0 = -inf for a class a given prior rules out; the sigmoid keeps it at exactly 0 / 1.
  log_odds = jnp.log(prior[1]) - jnp.log(prior[0]) + jnp.sum(jnp.where(used, lam, 0.0) * w, 1)
  probs = jnp.stack([jax.nn.sigmoid(-log_odds), jax.nn.sigmoid(log_odds)], axis=1)
  return {'probs': probs, 'accuracy': (1.0 + a) / 2.0, 'weights': w, 'prior': prior,
          'triplets': count, 'dependencies': dep,
          'votes_used': jnp.sum(used) / jnp.maximum(jnp.sum(on), 1)}


def _check_dependencies(dependencies, m: int) -> np.ndarray:
  """A list of source pairs -> symmetric bool [m, m], or a UserError."""
  bad = UserError(f'{WHERE}: dependencies={dependencies!r} must be pairs (i, j) of distinct '
                  f"source indices in 0..{m - 1}, 'auto', or None")
  try:
    pairs = [tuple(p) for p in dependencies]
  except TypeError:
    raise bad from None
  dep = np.zeros((m, m), bool)
  for pair in pairs:
    if len(pair) != 2 or pair[0] == pair[1] or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < m for i in pair):
      raise bad
    dep[pair[0], pair[1]] = dep[pair[1], pair[0]] = True
  return dep


def aggregate(votes, *, num_classes: int, dependencies=None, dependency_threshold: float = 0.5,
              min_overlap: int = 10, moments_over: str = 'voted', signs: str = 'positive',
              prior=None, eps: float = 0.01) -> tuple[jax.Array, dict]:
  """Triplet-method posteriors of a binary vote matrix.

  Args:
    votes: int [n, m], -1 abstain, else a class in {0, 1}; m >= 3 sources.
    num_classes: C; must be 2.
    dependencies: None (sources independent given Y), a list of pairs (i, j) of dependent
      sources, or 'auto' (pairs whose abstentions overlap: `dependency_threshold`).
    dependency_threshold: with 'auto', the share of the largest possible above-chance overlap of
      two sources' voting rows that makes them dependent, in (0, 1].
    min_overlap: a pair's moment is used only if both vote on at least this many rows (>= 1).
    moments_over: 'voted' (M_ij over the rows where both vote: unbiased however the silences
      correlate) or 'all' (FlyingSquid's E[lam_i lam_j] over all rows, abstentions as 0, then
      a_i = |E[lam_i Y]| / p_i: biased when sources fall silent together).
    signs: 'positive' (every a_i > 0: each source better than random, FlyingSquid's
      `all_positive`) or 'data' (signs from the moments, module docstring).
    prior: [2] class prior, or None to estimate it from the mean votes and the accuracies.
    eps: clip of the accuracies (1 + a) / 2 to [eps, 1 - eps] in the weights, in (0, 0.5).

  Returns:
    (probs [n, 2] rows summing to 1, {'accuracy': [m] estimated P(vote right | source votes)
     (0.5 where a source had no triplet), 'weights': [m] log-odds weights, 'prior': [2],
     'triplets': [m] valid triplets per source, 'dependencies': bool [m, m] used,
     'votes_used': share of the non-abstain votes the posterior read}).
  """
  if num_classes != 2 or isinstance(num_classes, bool):
    raise UserError(f'{WHERE}: num_classes={num_classes!r}; the triplet method is binary only '
                    '(C = 2): use dawid_skene or weighted for more classes')
  votes = lm.check_votes(votes, num_classes, WHERE)
  m = votes.shape[1]
  if m < 3:
    raise UserError(f'{WHERE}: votes have {m} sources; the triplet method needs at least 3')
  if not 0 < dependency_threshold <= 1:
    raise UserError(f'{WHERE}: dependency_threshold={dependency_threshold!r} must be in (0, 1]')
  if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, np.integer)) \
      or min_overlap < 1:
    raise UserError(f'{WHERE}: min_overlap={min_overlap!r} must be an int >= 1')
  if not 0 < eps < 0.5:
    raise UserError(f'{WHERE}: eps={eps!r} must be in (0, 0.5)')
  if moments_over not in ('voted', 'all'):
    raise UserError(f"{WHERE}: moments_over={moments_over!r}; use 'voted' or 'all'")
  if signs not in ('positive', 'data'):
    raise UserError(f"{WHERE}: signs={signs!r}; use 'positive' or 'data'")
  auto = isinstance(dependencies, str)
  if auto and dependencies != 'auto':
    raise UserError(f"{WHERE}: dependencies={dependencies!r}; use 'auto', a list of pairs "
                    '(i, j) or None')
  dep = np.zeros((m, m), bool) if auto or dependencies is None else \
      _check_dependencies(dependencies, m)
  out = fit(votes, jnp.asarray(dep), lm.check_prior(prior, 2, WHERE), auto=auto,
            over=moments_over, signs=signs, threshold=jnp.float32(dependency_threshold), min_overlap=jnp.float32(min_overlap),
            eps=jnp.float32(eps))
  probs = out.pop('probs')
  return probs, out
