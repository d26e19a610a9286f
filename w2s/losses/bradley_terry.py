"""Bradley-Terry reward-model loss on preference pairs.

Christiano et al. 2017, "Deep Reinforcement Learning from Human Preferences"; Ouyang et al.
2022, "Training language models to follow instructions with human feedback" (InstructGPT), eq. 1:
a scalar reward r(x, y) (a head on the last token) with P(y_0 > y_1) = sigmoid(r_0 - r_1), fitted
by cross-entropy to the preference:
  L = -sum_k labels_k log softmax(r)_k,
which is -log sigmoid(r_w - r_l) for a hard label. Soft labels are how a weak reward model
supervises a strong one (Burns et al. 2023: label sigmoid(r_weak(y_0) - r_weak(y_1))).

The rewards come as classification logits [B, 2] (`w2s.models.sequence.reward_apply_fn`), so the
train step's accuracy (argmax of rewards vs argmax of labels) is the pairwise accuracy.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0,
         batch=None) -> tuple[jax.Array, dict]:
  """Bradley-Terry cross-entropy per pair.

  Args:
    logits: [B, 2] rewards r(x, y_0), r(x, y_1).
    labels: [B, 2] soft preference (labels[:, 0] = P(y_0 preferred)).
    mask: [B] 1 for real pairs, 0 for padding (padded rows return 0).
    step_frac: unused.
    batch: unused.

  Returns:
    (per_example [B] float32 -sum_k labels_k log softmax(r)_k, {}).
  """
  del step_frac, batch
  if logits.ndim != 2 or logits.shape[-1] != 2:
    raise UserError(f'loss bradley_terry takes rewards [B, 2] (one per response), got shape '
                    f'{logits.shape}; use a num_classes=1 model with '
                    'w2s.models.sequence.reward_apply_fn')
  labels = _soft_ce.clean_labels(labels, mask)
  # log softmax(r)_0 = log sigmoid(r_0 - r_1): the margin form keeps a small loss's digits
  # (logsumexp(r) - r_w cancels in float32 when the margin is large)
  d = logits[:, 0].astype(jnp.float32) - logits[:, 1].astype(jnp.float32)
  per = -labels[:, 0] * jax.nn.log_sigmoid(d) - labels[:, 1] * jax.nn.log_sigmoid(-d)
  return _soft_ce.zero_padding(per, mask), {}
