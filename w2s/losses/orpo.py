"""Odds-Ratio Preference Optimization: SFT on the chosen response plus an odds-ratio penalty.

Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model"
(arXiv:2403.07691), eqs. 6-8:
  L = L_SFT(y_w) - lam * log sigmoid(log odds(y_w) - log odds(y_l)),
  odds(y) = P(y) / (1 - P(y)),  P(y) = exp(mean over response tokens of log pi(y_t | x, y_<t)),
L_SFT the mean token negative log-likelihood of the chosen (argmax label) response. No reference
model: batch['ref_logp'] is not read. Yang et al. 2024 ("Weak-to-Strong Reasoning", stage II)
use it on pairs built from the strong model's own samples.
"""
import jax
import jax.numpy as jnp

from w2s.losses import _pairs
from w2s.losses import sft

# P(y) = 1 makes log odds infinite; the mean log-prob is kept below this (float32 resolves it)
_MAX_MEAN_LOGP = -1e-6


def log1mexp(x: jax.Array) -> jax.Array:
  """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler 2012, "Accurately computing
  log(1 - exp(-|a|))")."""
  return jnp.where(x > -jnp.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def log_odds(mean_logp: jax.Array) -> jax.Array:
  """log(P / (1 - P)) of P = exp(mean_logp), mean_logp clipped below 0."""
  m = jnp.minimum(mean_logp, _MAX_MEAN_LOGP)
  return m - log1mexp(m)


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0, batch=None,
         lam: float = 0.1) -> tuple[jax.Array, dict]:
  """ORPO per pair.

  Args:
    logits: [B, 2, T, V] policy next-token logits of both responses.
    labels: [B, 2] soft preference; the chosen response is argmax (response 0 on ties).
    mask: [B] 1 for real pairs, 0 for padding (padded rows return 0).
    step_frac: unused.
    batch: input_ids / loss_mask [B, 2, T].
    lam: weight lambda of the odds-ratio term.

  Returns:
    (per_example [B] float32, aux): 'correct' [B] = (log odds(y_w) > log odds(y_l)) and the
    scalar means 'nll' (L_SFT of y_w), 'log_odds_ratio' and 'odds_loss'
    (-log sigmoid(log odds ratio)).
  """
  del step_frac
  _pairs.check('orpo', logits, labels, batch, ref=False)
  mean_lp, _ = sft.mean_token_logprob(logits, batch['input_ids'], batch['loss_mask'])  # [B, 2]
  real = mask > 0
  mean_lp = jnp.where(real[:, None], mean_lp, -1.0)
  lp_w, _ = _pairs.orient(mean_lp, labels)
  odds_w, odds_l = _pairs.orient(log_odds(mean_lp), labels)
  ratio = odds_w - odds_l
  odds_loss = -jax.nn.log_sigmoid(ratio)
  per = -lp_w + lam * odds_loss
  return _pairs.zero_padding(per, mask), {
      'correct': _pairs.zero_padding((ratio > 0).astype(jnp.float32), mask),
      'nll': _pairs.masked_mean(-lp_w, mask),
      'log_odds_ratio': _pairs.masked_mean(ratio, mask),
      'odds_loss': _pairs.masked_mean(odds_loss, mask)}


loss.inputs = 'pairs'
