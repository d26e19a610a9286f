"""Product-of-experts target ("product") from the weak-to-strong release.

Burns et al. 2023, "Weak-to-Strong Generalization" (arXiv:2312.09390),
`product_loss_fn` of openai/weak-to-strong: the target is the renormalised
product of the student's and the weak supervisor's distributions,

  target ∝ p^beta * y_w^alpha  (sg),   loss = CE(z, target),

so the student keeps its own beliefs where it is confident and follows the weak
labels elsewhere. Computed in log space; a class with y_w = 0 gets target 0
(alpha > 0), as in the release.
"""
import jax
import jax.numpy as jnp

from w2s.losses import _soft_ce


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0,
         batch=None, alpha: float = 1.0, beta: float = 1.0) -> tuple[jax.Array, dict]:
  """CE(z, sg(normalise(p^beta y_w^alpha))) per example.

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] weak soft labels y_w.
    mask: [B] 1 real, 0 padding (padded rows return 0).
    step_frac: unused.
    batch: unused.
    alpha: exponent of the weak labels (release: 1).
    beta: exponent of the student's prediction (release: 1).

  Returns:
    (per_example [B], {}).
  """
  del step_frac, batch
  labels = _soft_ce.clean_labels(labels, mask)
  log_target = beta * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  if alpha != 0:  # 0^0 = 1, as torch.pow
    log_target = log_target + alpha * _soft_ce.safe_log(labels)
  target = jax.lax.stop_gradient(jax.nn.softmax(log_target, axis=-1))
  return _soft_ce.zero_padding(_soft_ce.soft_ce(logits, target), mask), {}
