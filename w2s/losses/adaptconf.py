"""Adaptive confidence distillation ("adaptconf") from Vision Superalignment.

Guo, Chen, Wang, Han, Xu, Wang 2024, "Vision Superalignment: Weak-to-Strong
Generalization for Vision Foundation Models" (arXiv:2402.03749): per example,
the student weighs its own hard prediction against the weak teacher's soft
labels by how well each hard label fits the student,

  a = e^{CE(z, argmax z)/T} / (e^{CE(z, argmax z)/T} + e^{CE(z, argmax y_w)/T})  (sg)
  loss = (1 - a) KD_tau(z || y_w) + a CE(z, argmax z),

KD_tau = tau^2 KL(softmax(log y_w / tau) || softmax(z / tau)) (Hinton et al.
distillation with the weak probabilities as teacher; tau = 1 uses y_w as is).
Their CIFAR recipe adds a ground-truth CE term; pure weak-to-strong has none.
Their release also ramps a linearly over the first 25% of epochs
(`warmup_frac=0.25` reproduces that; the default 0 follows the formula above).
"""
import jax
import jax.numpy as jnp

from w2s.losses import _batch_stats
from w2s.losses import _soft_ce


def kd(logits: jax.Array, teacher_probs: jax.Array, tau: float) -> jax.Array:
  """tau^2 KL(softmax(log q / tau) || softmax(z / tau)) per row: [B, C] x [B, C] -> [B]."""
  teacher = jax.nn.softmax(_soft_ce.safe_log(teacher_probs) / tau, axis=-1)
  log_student = jax.nn.log_softmax(logits.astype(jnp.float32) / tau, axis=-1)
  kl = jnp.sum(jax.scipy.special.xlogy(teacher, teacher) - teacher * log_student, axis=-1)
  return tau ** 2 * kl


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0,
         batch=None, T: float = 1.0, tau: float = 1.0,  # noqa: N803 (the paper's symbol)
         warmup_frac: float = 0.0) -> tuple[jax.Array, dict]:
  """(1 - a) KD_tau(z || y_w) + a CE(z, argmax z) per example (Guo et al. 2024).

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] weak soft labels y_w.
    mask: [B] 1 real, 0 padding (padded rows return 0).
    step_frac: scalar s = step / total_steps (used only with warmup_frac > 0).
    batch: unused.
    T: temperature of the confidence weight a.
    tau: distillation temperature.
    warmup_frac: ramp a by min(1, s / warmup_frac) (their release: 0.25); 0 = off.

  Returns:
    (per_example [B], {'mean_a': mean over real rows of the weight a}).
  """
  del batch
  labels = _soft_ce.clean_labels(labels, mask)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  num_classes = logits.shape[-1]
  own_hard = jax.nn.one_hot(jnp.argmax(logp, axis=-1), num_classes)
  ce_self = -jnp.sum(own_hard * logp, axis=-1)
  ce_weak = -jnp.sum(jax.nn.one_hot(jnp.argmax(labels, axis=-1), num_classes) * logp, axis=-1)
  # e^{x/T} / (e^{x/T} + e^{y/T}) = sigmoid((x - y) / T), without overflow.
  a = jax.lax.stop_gradient(jax.nn.sigmoid((ce_self - ce_weak) / T))
  if warmup_frac > 0:
    a = a * jnp.minimum(1.0, jnp.asarray(step_frac, jnp.float32) / warmup_frac)
  per_example = (1.0 - a) * kd(logits, labels, tau) + a * ce_self
  return _soft_ce.zero_padding(per_example, mask), {'mean_a': _batch_stats.masked_mean(a, mask)}
