"""UDA: unsupervised data augmentation with confidence masking, sharpening and TSA.

Xie, Dai, Hovy, Luong, Le 2020, "Unsupervised Data Augmentation for Consistency Training"
(NeurIPS), and the authors' release (google-research/uda):

  t = sg(softmax(z(a(x_u)) / T))                             (sharpening, T = 0.4)
  L_u = (1 / M) sum_u 1(max q >= beta) KL(t || softmax(z(A(x_u))))    (q unsharpened, beta 0.8)
  L = L_x^TSA + lambda * L_u                                 (lambda = 1)

Training-signal annealing (TSA): with t_frac = step / total_steps and
  eta = t_frac ('linear'), 1 - exp(-5 t_frac) ('log'), exp(5 (t_frac - 1)) ('exp'),
the threshold is eta (1 - 1/C) + 1/C; labelled rows whose correct-class probability
<y, sg(p)> exceeds it are dropped, and L_x^TSA averages the CE over the kept real rows
(the release divides by max(#kept, 1)). 'none' (the default, USB's) keeps every row; the paper
recommends 'exp' when labels are very few (the model overfits them fast), 'log' when there are
many. Soft labels generalise the release's one-hot "correct-class probability" to <y, p>.
The release masks with max q > beta; we use >= like FixMatch and USB (differs only at equality).
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _soft_ce
from w2s.ssl import fixmatch
from w2s.ssl import supervised

NEEDS_TEACHER = False
TSA_SCHEDULES = ('none', 'linear', 'log', 'exp')


def tsa_threshold(step, total_steps: int, schedule: str, num_classes: int) -> jax.Array:
  """eta(t) (1 - 1/C) + 1/C for schedule 'linear' | 'log' | 'exp'; 1 for 'none' (scalar)."""
  if schedule not in TSA_SCHEDULES:
    raise UserError(f'uda tsa={schedule!r} is not one of {TSA_SCHEDULES}')
  t = jnp.asarray(step, jnp.float32) / float(total_steps)
  if schedule == 'none':
    return jnp.ones((), jnp.float32)
  eta = {'linear': lambda: t, 'log': lambda: 1.0 - jnp.exp(-5.0 * t),
         'exp': lambda: jnp.exp(5.0 * (t - 1.0))}[schedule]()
  return eta * (1.0 - 1.0 / num_classes) + 1.0 / num_classes


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step, total_steps,
         state=None, index_u=None, logits_ut=None, T: float = 0.4, beta: float = 0.8,
         lambda_u: float = 1.0, tsa: str = 'none'):
  """L_x^TSA + lambda * mean_u[1(max q >= beta) KL(sharpen(q, T) || p(A(x_u)))] (Xie et al. 2020).

  Args: see `w2s.ssl`; T (0.4), beta (0.8), lambda_u (1), tsa ('none' | 'linear' | 'log' | 'exp').

  Returns:
    (loss, {'loss_x', 'loss_u', 'mask_rate', 'tsa_threshold', 'sup_keep_rate'}, None).
  """
  del state, index_u, logits_ut
  labels = _soft_ce.clean_labels(labels_x, mask_x)
  p_x = jax.nn.softmax(jax.lax.stop_gradient(logits_x).astype(jnp.float32), axis=-1)
  threshold = tsa_threshold(step, total_steps, tsa, logits_x.shape[-1])
  keep_x = (mask_x > 0) & ~(jnp.sum(labels * p_x, axis=-1) > threshold)
  loss_x = supervised.masked_mean(_soft_ce.soft_ce(logits_x, labels), keep_x)

  conf, _ = fixmatch.confidence(logits_uw)
  keep_u = conf >= beta
  log_t = jax.nn.log_softmax(jax.lax.stop_gradient(logits_uw).astype(jnp.float32) / T, axis=-1)
  log_p = jax.nn.log_softmax(logits_us.astype(jnp.float32), axis=-1)
  kl = jnp.sum(jnp.exp(log_t) * (log_t - log_p), axis=-1)
  loss_u = supervised.masked_mean(jnp.where(keep_u, kl, 0.0), mask_u)
  aux = {'loss_x': loss_x, 'loss_u': loss_u, 'tsa_threshold': threshold,
         'mask_rate': supervised.masked_mean(keep_u.astype(jnp.float32), mask_u),
         'sup_keep_rate': supervised.masked_mean(keep_x.astype(jnp.float32), mask_x)}
  return loss_x + lambda_u * loss_u, aux, None
