"""EasyLLP ("easyllp"): instance-level learning from label proportions with a debiased soft label.

Busa-Fekete, Choi, Dick, Gentile & Munoz Medina 2023, "Easy Learning from Label Proportions"
(NeurIPS 2023, arXiv:2302.03115). Examples come in bags B of size k; only each bag's label
proportion alpha(B) = (1/k) sum_{j in B} y_j is known (y_j one-hot [C]). Every member x_i of B gets
the surrogate label

  y~_i = k (alpha(B) - p) + p  =  k alpha(B) - (k - 1) p,      p = E[y] the class prior,

and the loss is the CE against it, linear in the label:

  l~(z_i) = sum_c y~_ic (-log softmax(z_i)_c).

For bags of i.i.d. examples, E[y~_i | x_i, y_i] = y_i + (k - 1)(E[y] - p) = y_i, so the mean of l~
is an unbiased estimate of the instance-level CE with the hidden labels (the paper's binary form
y~ l(h, 1) + (1 - y~) l(h, 0) is the case C = 2). y~ sums to 1 but its entries leave [0, 1]
(k = 8, alpha = 0, p = 0.5: y~_c = -3.5), so one example's loss is unbounded below and only the
average over many examples is meaningful: a model that can memorise single examples can drive it
to -inf. k = 1 is ordinary CE on the (then exact) labels.

How the inputs reach the loss in w2s:

* `labels` [B, C] carry alpha(B) of each example's bag: an LLP split's 'label' column holds the
  bag proportion for every member (the way weak labels already flow through the trainer and its
  held-out evaluation).
* k: `batch['bag_size']` [B] (bags of different sizes), or the `bag_size` hyperparameter (the
  paper's fixed k); exactly one of the two.
* p: the `prior` hyperparameter (the paper's p; the training set's share of each class, which the
  bag proportions give exactly: sum_B k_B alpha(B) / N), or, with prior=None, the mean of alpha over
  the batch's real rows (an unbiased but noisy estimate; global under jit on a sharded batch).

Bags need not be whole in a batch: the loss is per example, so the trainer's shuffled batches are
what the paper's SGD analysis assumes.
"""
import jax
import jax.numpy as jnp
import numpy as np

from w2s.errors import UserError
from w2s.losses import _batch_stats
from w2s.losses import _soft_ce


def _bag_sizes(batch, bag_size, b: int) -> jax.Array:
  """k per example [B] float32, from batch['bag_size'] or the hyperparameter."""
  in_batch = batch is not None and 'bag_size' in batch
  if in_batch == (bag_size is not None):
    raise UserError("loss 'easyllp' needs the bag size k from exactly one place: "
                    "batch['bag_size'] [B] (per example) or the bag_size hyperparameter "
                    f"(fixed k); got {'both' if in_batch else 'neither'}")
  if not in_batch:
    if isinstance(bag_size, bool) or not isinstance(bag_size, (int, np.integer)) or bag_size < 1:
      raise UserError(f'easyllp bag_size={bag_size!r} must be an int >= 1 (the bag size k)')
    return jnp.full((b,), float(bag_size), jnp.float32)
  k = batch['bag_size']
  if tuple(k.shape) != (b,):
    raise UserError(f"batch['bag_size'] has shape {tuple(k.shape)}, expected [B] = ({b},): one "
                    'bag size per example')
  return jnp.asarray(k, jnp.float32)


def _prior(prior, num_classes: int):
  if prior is None:
    return None
  p = np.asarray(prior, np.float64)
  if p.shape != (num_classes,) or np.any(p < 0) or not np.isclose(p.sum(), 1.0, atol=1e-4):
    raise UserError(f'easyllp prior={prior!r} must be {num_classes} non-negative class shares '
                    'summing to 1 (or None to estimate it from the batch)')
  return jnp.asarray(p, jnp.float32)


def surrogate_labels(alpha: jax.Array, k: jax.Array, p: jax.Array) -> jax.Array:
  """y~ = k (alpha - p) + p [B, C] from bag proportions alpha [B, C], sizes k [B], prior p [C]."""
  return k[:, None] * (alpha - p) + p


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0, batch=None,
         bag_size: int | None = None, prior=None) -> tuple[jax.Array, dict]:
  """-sum_c y~_c log softmax(z)_c per example, y~ = k (alpha - p) + p.

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] the bag proportion alpha of each example's bag.
    mask: [B] 1 real, 0 padding (padded rows return 0 and do not enter the estimated prior).
    step_frac: unused.
    batch: the batch dict; 'bag_size' [B] is read when present.
    bag_size: fixed bag size k (when the batch has no 'bag_size').
    prior: [C] class prior p, or None for the batch mean of alpha.

  Returns:
    (per_example [B], {'negative_share': share of real rows whose surrogate has a negative entry,
     'min_surrogate': its smallest entry over real rows}).
  """
  del step_frac
  k = _bag_sizes(batch, bag_size, logits.shape[0])
  alpha = _soft_ce.clean_labels(labels, mask)
  p = _prior(prior, logits.shape[-1])
  if p is None:
    p = _batch_stats.weak_prior(alpha, mask)
  target = surrogate_labels(alpha, k, p)
  per_example = _soft_ce.soft_ce(logits, target)
  row_min = jnp.min(target, axis=-1)
  aux = {'negative_share': _batch_stats.masked_mean((row_min < 0).astype(jnp.float32), mask),
         'min_surrogate': jnp.min(jnp.where(mask > 0, row_min, jnp.inf))}
  aux['min_surrogate'] = jnp.where(jnp.isfinite(aux['min_surrogate']), aux['min_surrogate'], 0.0)
  return _soft_ce.zero_padding(per_example, mask), aux
