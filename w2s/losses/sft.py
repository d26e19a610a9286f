"""Supervised fine-tuning (next-token cross-entropy) on response tokens.

The generative weak-to-strong baseline: the strong model is fine-tuned on the weak model's
generations (Burns et al. 2023, "Weak-to-Strong Generalization", arXiv:2312.09390, which also
fine-tunes generatively before its reward-model stage; Yang et al. 2024, "Weak-to-Strong
Reasoning", stage I, on the weak solutions the strong model agrees with). Per sequence,
  L = w * (1/|R|) sum_{t in R} -log pi(y_t | x, y_<t),
R the loss_mask tokens (the response, prompt and padding masked) and w = labels[:, 0] a
per-sequence weight. normalize='sum' drops the 1/|R| (every token counts the same across the
batch instead of every sequence).
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.models import sequence

NORMALIZE = ('tokens', 'sum')


def target_mask(loss_mask: jax.Array) -> jax.Array:
  """loss_mask [..., T] as float32 with position 0 cleared (the first token has no prediction)."""
  m = loss_mask.astype(jnp.float32)
  return m.at[..., 0].set(0.0)


def mean_token_logprob(logits: jax.Array, input_ids: jax.Array,
                       loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean log pi(y_t | x, y_<t) over loss_mask tokens [...], their count [...]); a sequence with
  no target token has mean 0."""
  m = target_mask(loss_mask)
  n = jnp.sum(m, axis=-1)
  total = jnp.sum(sequence.token_logprobs(logits, input_ids) * m, axis=-1)
  return total / jnp.maximum(n, 1.0), n


def token_accuracy(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> jax.Array:
  """[...] fraction of loss_mask tokens t with argmax(logits[t - 1]) == input_ids[t] (0 when
  there is none)."""
  m = target_mask(loss_mask)[..., 1:]
  hit = (jnp.argmax(logits[..., :-1, :], axis=-1) == input_ids[..., 1:]).astype(jnp.float32)
  return jnp.sum(hit * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0, batch=None,
         normalize: str = 'tokens') -> tuple[jax.Array, dict]:
  """Next-token cross-entropy per sequence.

  Args:
    logits: [B, T, V] next-token logits.
    labels: [B, 1] per-sequence weight w (1.0 by default); only column 0 is read.
    mask: [B] 1 for real rows, 0 for padding (padded rows return 0).
    step_frac: unused.
    batch: input_ids [B, T], loss_mask [B, T] (1 at response tokens).
    normalize: 'tokens' (mean over the sequence's response tokens) or 'sum' (their sum).

  Returns:
    (per_example [B] float32, aux): 'correct' [B] token accuracy on the response, 'tokens' the
    mean response length over real rows.
  """
  del step_frac
  if normalize not in NORMALIZE:
    raise UserError(f'sft: unknown normalize {normalize!r}; use one of {NORMALIZE}')
  if logits.ndim != 3:
    raise UserError(f'loss sft takes token logits [B, T, V], got shape {logits.shape}; train it '
                    'with the LM apply function (w2s.models.sequence.lm_apply_fn)')
  if batch is None or 'input_ids' not in batch or 'loss_mask' not in batch:
    raise UserError('loss sft needs batch["input_ids"] and batch["loss_mask"] [B, T]; build '
                    'sequence examples with a loss_mask over the response tokens')
  ids, lmask = batch['input_ids'], batch['loss_mask']
  mean_lp, n = mean_token_logprob(logits, ids, lmask)
  nll = -mean_lp if normalize == 'tokens' else -mean_lp * n
  real = mask > 0
  w = jnp.where(real, labels[:, 0].astype(jnp.float32), 0.0)
  per = jnp.where(real, w * nll, 0.0)
  acc = jnp.where(real, token_accuracy(logits, ids, lmask), 0.0)
  count = jnp.maximum(jnp.sum(real.astype(jnp.float32)), 1.0)
  return per.astype(jnp.float32), {'correct': acc,
                                   'tokens': jnp.sum(jnp.where(real, n, 0.0)) / count}


loss.inputs = 'tokens'
