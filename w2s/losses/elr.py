"""Early-learning regularization (ELR): CE plus a pull towards the model's own running predictions.

Liu, Niles-Weed, Razavian, Fernandez-Granda 2020, "Early-Learning Regularization Prevents
Memorization of Noisy Labels" (NeurIPS): networks fit clean labels first and memorise noisy ones
later; ELR keeps a per-example temporal ensemble of the model's predictions,
t_i <- beta t_i + (1 - beta) sg(p_i), and adds lambda * log(1 - <p_i, t_i>), which keeps p_i close
to what the model predicted early instead of to a (weak, noisy) label.

The per-example targets are training state: `init_state` makes them (zeros [N, C], as the
paper), the trainer keeps them in `TrainState.extra['loss']` (checkpointed, so a resumed run
continues them) and gives every batch a dense 'index' [B] (row of the training split).
"""
import jax
import jax.numpy as jnp

from w2s.losses import _soft_ce

CLIP = 1e-4  # the paper clamps p to [1e-4, 1 - 1e-4] before the target update


def init_state(*, num_examples: int, num_classes: int, **hparams) -> dict:
  """{'targets': zeros [N, C]}: one running target per training example."""
  del hparams
  return {'targets': jnp.zeros((num_examples, num_classes), jnp.float32)}


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0, batch=None,
         loss_state=None, lam: float = 3.0, beta: float = 0.7) -> tuple[jax.Array, dict]:
  """CE(z, y_w) + lam * log(1 - <p, t_new>) per example, and the updated targets.

  Args:
    logits: [B, C] student logits.
    labels: [B, C] soft (weak) labels.
    mask: [B] 1 for real rows; padded rows return 0 and leave their target unchanged.
    step_frac: unused.
    batch: the batch; reads 'index' int [B], the rows of the training split.
    loss_state: {'targets': [N, C]} from `init_state` (kept by the trainer).
    lam: weight of the regulariser (paper: 3 on CIFAR-10).
    beta: momentum of the running targets (paper: 0.7).

  Returns:
    (per_example [B], {'elr_reg': mean regulariser over real rows,
                       'loss_state': {'targets': [N, C] updated at this batch's rows}}).
  """
  del step_frac
  from w2s.errors import UserError
  if loss_state is None or batch is None or 'index' not in batch:
    raise UserError('elr keeps per-example targets: train it with w2s.train.fit, which passes '
                    'loss_state and batch["index"]')
  labels = _soft_ce.clean_labels(labels, mask)
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  clipped = jnp.clip(p, CLIP, 1.0 - CLIP)
  clipped = jax.lax.stop_gradient(clipped / clipped.sum(-1, keepdims=True))
  idx = batch['index']
  all_targets = jnp.asarray(loss_state['targets'])                   # [N, C]
  old = all_targets[idx]                                              # [B, C]
  new = beta * old + (1.0 - beta) * clipped
  reg = jnp.log(1.0 - jnp.sum(new * p, axis=-1))                      # [B]
  per_example = _soft_ce.soft_ce(logits, labels) + lam * reg
  real = mask > 0
  targets = all_targets.at[idx].set(jnp.where(real[:, None], new, old))
  mean_reg = jnp.sum(jnp.where(real, reg, 0.0)) / jnp.maximum(jnp.sum(real), 1)
  return _soft_ce.zero_padding(per_example, mask), {'elr_reg': mean_reg,
                                                     'loss_state': {'targets': targets}}


loss.init_state = init_state  # how the trainer finds the state of a stateful loss
