"""Bootstrapping loss of Reed et al. 2015 ("bootstrap").

Reed, Lee, Anguelov, Szegedy, Erhan, Rabinovich 2015, "Training Deep Neural
Networks on Noisy Labels with Bootstrapping" (arXiv:1412.6596): the target
mixes the (noisy, here weak) labels with the model's own prediction,

  soft: target = beta y_w + (1 - beta) p             (paper: beta = 0.95)
  hard: target = beta y_w + (1 - beta) onehot(argmax p)  (paper: beta = 0.8)

with the prediction part stop-gradient'ed; loss = CE(z, target).
(Not to be confused with the weak -> intermediate -> strong bootstrapping
protocol of Burns et al., which lives in w2s/protocols.)
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce

DEFAULT_BETA = {'soft': 0.95, 'hard': 0.8}


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0,
         batch=None, mode: str = 'soft', beta: float | None = None) -> tuple[jax.Array, dict]:
  """CE(z, beta y_w + (1 - beta) sg(p or onehot(argmax p))) per example.

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] weak soft labels y_w.
    mask: [B] 1 real, 0 padding (padded rows return 0).
    step_frac: unused.
    batch: unused.
    mode: 'soft' (p) or 'hard' (onehot(argmax p)).
    beta: weight of the weak labels; None = the paper's value for the mode.

  Returns:
    (per_example [B], {}).
  """
  del step_frac, batch
  if mode not in DEFAULT_BETA:
    raise UserError(f'bootstrap mode={mode!r} is not one of {tuple(DEFAULT_BETA)}; '
                    "use 'soft' or 'hard'")
  beta = DEFAULT_BETA[mode] if beta is None else beta
  labels = _soft_ce.clean_labels(labels, mask)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  own = probs if mode == 'soft' else _soft_ce.onehot_argmax(probs)
  target = beta * labels + (1.0 - beta) * jax.lax.stop_gradient(own)
  return _soft_ce.zero_padding(_soft_ce.soft_ce(logits, target), mask), {}
