"""Entropy-minimisation variant of the auxiliary confidence loss ("entropy").

The soft counterpart of `logconf` (Burns et al. 2023, "Weak-to-Strong
Generalization", arXiv:2312.09390; the `harden=False` branch of EleutherAI's
w2s `log_confidence_loss`): the student's own *soft* prediction replaces the
hardened one,

  target = (1 - alpha(s)) y_w + alpha(s) sg(p),  alpha as in `logconf`.

CE(z, sg(p)) = H(p) in value, so this adds alpha times the student's entropy to
the weak-label CE (the gradient of the sg'd term is 0 at p, so it regularises
only through the value mix: the gradient is (1 - alpha)(p - y_w)).
"""
import jax
import jax.numpy as jnp

from w2s.losses import _soft_ce
from w2s.losses.logconf import aux_coefficient


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac, batch=None,
         aux_coef: float = 0.5, warmup_frac: float = 0.1,
         faithful: bool = False, step=None, total_steps: int | None = None
         ) -> tuple[jax.Array, dict]:
  """CE(z, (1 - alpha) y_w + alpha sg(softmax z)) per example.

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] weak soft labels y_w.
    mask: [B] 1 real, 0 padding (padded rows return 0).
    step_frac: scalar s = step / total_steps.
    batch: unused.
    aux_coef, warmup_frac, faithful, step, total_steps: the alpha(s) schedule of `logconf`.

  Returns:
    (per_example [B], {'alpha': alpha(s)}).
  """
  del batch
  labels = _soft_ce.clean_labels(labels, mask)
  probs = jax.lax.stop_gradient(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
  alpha = aux_coefficient(step_frac, aux_coef=aux_coef, warmup_frac=warmup_frac,
                          faithful=faithful, step=step, total_steps=total_steps)
  target = (1.0 - alpha) * labels + alpha * probs
  return _soft_ce.zero_padding(_soft_ce.soft_ce(logits, target), mask), {'alpha': alpha}
