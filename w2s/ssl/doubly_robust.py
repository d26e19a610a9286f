"""Doubly robust self-training: pseudo-label loss on all data, corrected on the labelled rows.

Zhu, Ding, Jacobson, Wu, Zhan, Jordan, Jiao 2023, "Doubly Robust Self-Training" (NeurIPS):

  L_DR = (1 / (n + m)) sum_{L u U} l(x, y^) - (1 / n) sum_L l(x, y^) + (1 / n) sum_L l(x, y)

If the pseudo-labels y^ are perfect the last two terms cancel and the loss is the pseudo-label
loss on all n + m rows; if they are useless, the first two cancel (in expectation) and it is the
labelled loss alone. l is the cross-entropy; n, m are the real rows of this step's labelled and
unlabelled batches (so the batch ratio mu sets the mix, where the paper uses the dataset sizes).

In-step adaptation: the paper's y^ come from a fixed teacher (a model trained beforehand) on
every row. Here y^ = sg(onehot(argmax z(a(x)))) is the current student's own prediction on the
weak view (of x_l for the labelled rows, of x_u for the unlabelled ones), so no extra model or
pass is needed; `hard=False` uses sg(softmax(z / T)). The prediction trained on y^ for U is the
weak view (`student_view='weak'`, the paper's same-input form) or the strong one ('strong',
FixMatch-style).
"""
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce
from w2s.ssl import fixmatch
from w2s.ssl import supervised

NEEDS_TEACHER = False
VIEWS = ('weak', 'strong')


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step=None,
         total_steps=None, state=None, index_u=None, logits_ut=None, hard: bool = True,
         T: float = 1.0, student_view: str = 'weak'):
  """L_DR of Zhu et al. 2023 with the student's own stop-gradient pseudo-labels.

  Args: see `w2s.ssl`; hard (True), T (1.0, soft labels only), student_view ('weak' | 'strong').

  Returns:
    (loss, {'loss_x': (1/n) sum_L l(x, y), 'loss_u': the first two terms,
            'agree_x': share of real labelled rows with argmax y^ = argmax y}, None).
  """
  del step, total_steps, state, index_u, logits_ut
  if student_view not in VIEWS:
    raise UserError(f'doubly_robust student_view={student_view!r} is not one of {VIEWS}')
  real_x, real_u = mask_x > 0, mask_u > 0
  yhat_x = fixmatch.pseudo_targets(logits_x, hard=hard, T=T)
  yhat_u = fixmatch.pseudo_targets(logits_uw, hard=hard, T=T)
  pred_u = logits_uw if student_view == 'weak' else logits_us
  sum_x_hat = jnp.sum(jnp.where(real_x, _soft_ce.soft_ce(logits_x, yhat_x), 0.0))
  sum_u_hat = jnp.sum(jnp.where(real_u, _soft_ce.soft_ce(pred_u, yhat_u), 0.0))
  n = jnp.sum(real_x).astype(jnp.float32)
  m = jnp.sum(real_u).astype(jnp.float32)
  loss_u = (sum_x_hat + sum_u_hat) / jnp.maximum(n + m, 1.0) - sum_x_hat / jnp.maximum(n, 1.0)
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  agree = (jnp.argmax(yhat_x, -1) == jnp.argmax(labels_x, -1)).astype(jnp.float32)
  aux = {'loss_x': loss_x, 'loss_u': loss_u, 'agree_x': supervised.masked_mean(agree, mask_x)}
  return loss_x + loss_u, aux, None
