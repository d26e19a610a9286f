"""Generalised cross-entropy ("gce"), a noise-robust loss.

Zhang & Sabuncu 2018, "Generalized Cross Entropy Loss for Training Deep Neural
Networks with Noisy Labels" (NeurIPS, arXiv:1805.07836): the L_q loss

  L_q(z, y) = (1 - (sum_c y_c p_c)^q) / q,   q in (0, 1],

interpolates between CE (q -> 0) and MAE (q = 1); the paper's default q = 0.7.
With soft weak labels, sum_c y_c p_c is the probability the student gives the
weak label. Gradients flow through p (no stop-gradient).
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0,
         batch=None, q: float = 0.7) -> tuple[jax.Array, dict]:
  """(1 - <y_w, p>^q) / q per example.

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] weak soft labels y_w.
    mask: [B] 1 real, 0 padding (padded rows return 0).
    step_frac: unused.
    batch: unused.
    q: exponent in (0, 1] (paper: 0.7).

  Returns:
    (per_example [B], {}).
  """
  del step_frac, batch
  if not 0 < q <= 1:
    raise UserError(f'gce q={q} must be in (0, 1]; the paper uses 0.7 (q -> 0 is plain CE)')
  labels = _soft_ce.clean_labels(labels, mask)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  # The floor keeps d/dx x^q = q x^(q-1) finite if p underflows on the weak label.
  agree = jnp.maximum(jnp.sum(labels * probs, axis=-1), 1e-12)
  return _soft_ce.zero_padding((1.0 - agree ** q) / q, mask), {}
