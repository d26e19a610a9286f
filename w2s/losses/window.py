"""Confidence-window loss ("window"): CE only where the student is unsure.

From EleutherAI's weak-to-strong replication (github.com/EleutherAI/w2s,
`confidence_window_loss`, radius 'midweak'), a variant of the Burns et al.
2023 baselines: cross-entropy to the weak labels only on examples whose student
confidence max_c p_c is below 0.5 + r, summed and divided by the number of
(real) examples B, so examples the student is already sure about contribute 0.

r defaults to the median weak confidence over the (global, real) batch,
r = median_B(max_c y_w - 0.5), i.e. the window is max p < median(max y_w); in
the binary case max y_w - 0.5 = |y_w[:, 1] - 0.5|, EleutherAI's definition
(they take the median over the whole training set: pass that as `radius` to
reproduce it exactly). For C > 2 the same formula keeps the meaning "less
confident than the typical weak label".
"""
import jax
import jax.numpy as jnp

from w2s.losses import _batch_stats
from w2s.losses import _soft_ce


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0,
         batch=None, radius: float | None = None) -> tuple[jax.Array, dict]:
  """1[max p < 0.5 + r] CE(z, y_w) per example (its masked mean is "/ B").

  The train step divides sum(per_example * mask) by the number of real rows,
  so returning 0 outside the window gives exactly sum_window CE / B_real.

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] weak soft labels y_w.
    mask: [B] 1 real, 0 padding (ignored by the median, returns 0).
    step_frac: unused.
    batch: unused.
    radius: fixed r; None (default) = median weak confidence of the batch.

  Returns:
    (per_example [B], {'radius': r, 'window_frac': share of real rows in the window}).
  """
  del step_frac, batch
  labels = _soft_ce.clean_labels(labels, mask)
  if radius is None:
    r = _batch_stats.masked_median(jnp.max(labels, axis=-1) - 0.5, mask)
  else:
    r = jnp.asarray(radius, jnp.float32)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  inside = jax.lax.stop_gradient(jnp.max(probs, axis=-1) < 0.5 + r).astype(jnp.float32)
  per_example = inside * _soft_ce.soft_ce(logits, labels)
  aux = {'radius': r, 'window_frac': _batch_stats.masked_mean(inside, mask)}
  return _soft_ce.zero_padding(per_example, mask), aux
