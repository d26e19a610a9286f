"""Soft-target cross-entropy and the padding hygiene every loss applies.

Padding rows (mask == 0) may carry all-zero labels; a loss that takes logs of
its target would turn those into NaN, and NaN * 0 is still NaN in the train
step's masked mean and in its gradient. So losses replace padded labels by the
uniform distribution before use (`clean_labels`) and return 0 on padded rows
(`zero_padding`).
"""
import jax
import jax.numpy as jnp


def soft_ce(logits: jax.Array, target: jax.Array) -> jax.Array:
  """Cross-entropy H(target, softmax(logits)) per row.

  Args:
    logits: [B, C] student logits.
    target: [B, C] target distribution (rows sum to 1).

  Returns:
    [B] float32 -sum_c target_c log softmax(logits)_c.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(target.astype(jnp.float32) * logp, axis=-1)


def clean_labels(labels: jax.Array, mask: jax.Array) -> jax.Array:
  """labels [B, C] as float32 with padded rows replaced by the uniform distribution."""
  num_classes = labels.shape[-1]
  labels = labels.astype(jnp.float32)
  return jnp.where(mask[:, None] > 0, labels, 1.0 / num_classes)


def zero_padding(per_example: jax.Array, mask: jax.Array) -> jax.Array:
  """per_example [B] with padded rows set to exactly 0 (float32)."""
  return jnp.where(mask > 0, per_example, 0.0).astype(jnp.float32)


def onehot_argmax(x: jax.Array) -> jax.Array:
  """[B, C] one-hot of the row-wise argmax of x [B, C] (first index on ties)."""
  return jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=jnp.float32)


def safe_log(p: jax.Array) -> jax.Array:
  """log p with log 0 = -inf and no NaN gradient path (targets are sg'd anyway)."""
  return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)

