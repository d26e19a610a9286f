"""Dawid-Skene ("dawid_skene"): EM over per-source confusion matrices.

Dawid & Skene 1979, "Maximum Likelihood Estimation of Observer Error-Rates Using the EM
Algorithm" (JRSS C 28(1)). Each source j has a confusion matrix pi_j[c, c'] = P(source j says c'
| true class c, j does not abstain) and the classes a prior rho; sources are independent given
the class. Abstentions are skipped by default (`abstain='skip'`: they carry no information).
With `abstain='model'` an abstention is one more output of every source, column C of a
[C, C + 1] confusion matrix, pi_j[c, C] = P(j abstains | class c): a rule that only ever votes
one class (most keyword rules) then says something when it is silent, and a row nobody votes on
gets rho_c prod_j pi_j[c, C] instead of the prior. EM:

  E-step  T_ic  ∝ rho_c prod_{j: L_ij != -1} pi_j[c, L_ij]          (in log space, normalised
          by logsumexp, so many sources cannot underflow)
  M-step  pi_j[c, c'] = (a + sum_i T_ic 1[L_ij = c']) / (C a + sum_i T_ic 1[L_ij != -1])
          rho_c       = (a + sum_i T_ic) / (C a + n)

(with `abstain='model'`, c' also ranges over the abstention and the M-step's denominator counts
every row: C + 1 pseudo-counts and sum_i T_ic)

with a small Dirichlet pseudo-count a (`smoothing`) per cell, so a class a source never reports
keeps a finite log-probability: the MAP variant of the paper's maximum likelihood. T starts at the
majority vote (ties split evenly, all-abstain rows uniform), which fixes which class is which (no
label switching) and lets a source that systematically flips labels be learned as flipping.

One iteration is an M-step then an E-step; the loop is a `jax.lax.while_loop` that stops after
`max_iters` iterations or when the mean per-row log-likelihood (1/n) sum_i log p(L_i) changed by
at most `tol`. The posteriors returned are those of the last E-step, consistent with the returned
pi and rho.
"""
import functools

import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s import label_models as lm
from w2s.label_models import majority


def _m_step(t, onehot, smoothing):
  """(pi [m, C, C], rho [C]) from posteriors t [n, C] and votes onehot [n, m, C]."""
  n, c = t.shape
  counts = jnp.einsum('ic,ijd->jcd', t, onehot) + smoothing
  pi = counts / jnp.sum(counts, axis=-1, keepdims=True)
  rho = (jnp.sum(t, axis=0) + smoothing) / (n + c * smoothing)
  return pi, rho


def _e_step(pi, rho, onehot):
  """(posteriors [n, C], mean per-row log-likelihood) under (pi, rho)."""
  log_joint = jnp.log(rho) + jnp.einsum('ijd,jcd->ic', onehot, jnp.log(pi))  # [n, C]
  log_evidence = jax.nn.logsumexp(log_joint, axis=-1)  # [n]: log p(L_i)
  return jnp.exp(log_joint - log_evidence[:, None]), jnp.mean(log_evidence)


@functools.partial(jax.jit, static_argnames=('num_classes', 'model_abstain'))
def fit(votes: jax.Array, *, num_classes: int, max_iters, tol, smoothing,
        model_abstain: bool = False) -> dict:
  """EM on votes int32 [n, m] (already checked). Returns {'posteriors' [n, C], 'confusion'
  [m, C, C] ([m, C, C + 1] with `model_abstain`), 'prior' [C], 'iterations', 'log_likelihood',
  'converged'}."""
  votes_1h = lm.one_hot_votes(votes, num_classes)
  uniform = jnp.full((num_classes,), 1.0 / num_classes, jnp.float32)
  t0 = majority.soft_majority(jnp.sum(votes_1h, axis=1), uniform, 'split')
  onehot = votes_1h
  if model_abstain:  # the abstention as output C of every source
    onehot = jnp.concatenate([votes_1h, (votes < 0)[..., None].astype(jnp.float32)], axis=-1)

  def step(t):
    pi, rho = _m_step(t, onehot, smoothing)
    return (pi, rho) + _e_step(pi, rho, onehot)

  def cond(state):
    *_, it, delta = state
    return (it < max_iters) & (delta > tol)

  def body(state):
    t, _, _, ll, it, _ = state
    pi, rho, t_new, ll_new = step(t)
    return t_new, pi, rho, ll_new, it + 1, jnp.abs(ll_new - ll)

  pi, rho, t, ll = step(t0)
  init = (t, pi, rho, ll, jnp.int32(1), jnp.float32(jnp.inf))
  t, pi, rho, ll, it, delta = jax.lax.while_loop(cond, body, init)
  return {'posteriors': t, 'confusion': pi, 'prior': rho, 'iterations': it,
          'log_likelihood': ll, 'converged': delta <= tol}


def aggregate(votes, *, num_classes: int, max_iters: int = 100, tol: float = 1e-6,
              smoothing: float = 0.01, abstain: str = 'skip') -> tuple[jax.Array, dict]:
  """Dawid-Skene posteriors of a vote matrix.

  Args:
    votes: int [n, m], -1 abstain, else a class in 0..C-1.
    num_classes: C.
    max_iters: at most this many EM iterations (>= 1).
    tol: stop once the mean per-row log-likelihood changes by at most this much.
    smoothing: Dirichlet pseudo-count a > 0 added to every confusion and prior cell.
    abstain: 'skip' (an abstention says nothing) or 'model' (it is one more output of each
      source, with its own probability per class).

  Returns:
    (posteriors [n, C] rows summing to 1, {'confusion': pi [m, C, C] (rows: true class, columns:
     the source's vote; with abstain='model' [m, C, C + 1], the last column P(abstain | class)),
     'prior': rho [C], 'iterations': int, 'log_likelihood': mean per-row
     log p(L_i), 'converged': bool}).
  """
  where = 'label model dawid_skene'
  if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
    raise UserError(f'{where}: max_iters={max_iters!r} must be an int >= 1')
  if not tol >= 0:
    raise UserError(f'{where}: tol={tol!r} must be >= 0')
  if not smoothing > 0:
    raise UserError(f'{where}: smoothing={smoothing!r} must be > 0 (it keeps log pi finite)')
  if abstain not in ('skip', 'model'):
    raise UserError(f"{where}: abstain={abstain!r}: use 'skip' (abstentions say nothing) or "
                    "'model' (P(abstain | class) per source)")
  votes = lm.check_votes(votes, num_classes, where)
  out = fit(votes, num_classes=num_classes, max_iters=max_iters, tol=jnp.float32(tol),
            smoothing=jnp.float32(smoothing), model_abstain=abstain == 'model')
  posteriors = out.pop('posteriors')
  return posteriors, out
