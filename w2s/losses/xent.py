"""Soft-target cross-entropy: the naive weak-to-strong baseline.

Burns et al. 2023, "Weak-to-Strong Generalization: Eliciting Strong
Capabilities With Weak Supervision" (arXiv:2312.09390): the strong student is
finetuned with plain cross-entropy to the weak supervisor's soft labels.
"""
import jax

from w2s.losses import _soft_ce


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0,
         batch=None) -> tuple[jax.Array, dict]:
  """CE(z, y_w) per example.

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] soft targets y_w (weak labels, or one-hot ground truth).
    mask: [B] 1 for real rows, 0 for padding (padded rows return 0).
    step_frac: unused (the signature is shared by all losses).
    batch: unused.

  Returns:
    (per_example [B] float32 -sum_c y_c log softmax(z)_c, {}).
  """
  del step_frac, batch
  labels = _soft_ce.clean_labels(labels, mask)
  return _soft_ce.zero_padding(_soft_ce.soft_ce(logits, labels), mask), {}
