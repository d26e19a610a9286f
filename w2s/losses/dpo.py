"""Direct Preference Optimization.

Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
Model" (arXiv:2305.18290), eq. 7:
  L = -log sigmoid(beta h),
  h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)],
log pi(y|x) the sum of the response's token log-probs (prompt and padding masked). In
weak-to-strong work the pairs come from a weak judge (Yang et al., "Weak-to-Strong Reasoning",
stage II; Geng et al., delta learning); the chosen response is argmax(labels).
"""
import jax

from w2s.losses import _pairs


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0, batch=None,
         beta: float = 0.1) -> tuple[jax.Array, dict]:
  """DPO per pair.

  Args:
    logits: [B, 2, T, V] policy next-token logits of both responses.
    labels: [B, 2] soft preference; the chosen response is argmax (response 0 on ties).
    mask: [B] 1 for real pairs, 0 for padding (padded rows return 0).
    step_frac: unused.
    batch: input_ids / loss_mask [B, 2, T], ref_logp [B, 2].
    beta: inverse temperature of the implicit reward beta * log(pi / pi_ref).

  Returns:
    (per_example [B] float32 -log sigmoid(beta h), aux): aux 'correct' [B] = (h > 0) and the
    scalar means 'reward_margin' (beta h), 'chosen_reward', 'rejected_reward'.
  """
  del step_frac
  _pairs.check('dpo', logits, labels, batch)
  h, w, l = _pairs.margins(logits, labels, mask, batch)
  per = -jax.nn.log_sigmoid(beta * h)
  return _pairs.zero_padding(per, mask), _pairs.aux(h, w, l, mask, beta)


loss.inputs = 'pairs'
