"""Pseudo-Label: the network's own confident predictions as targets for unlabelled data.

Lee 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep Neural
Networks" (ICML Workshop on Challenges in Representation Learning), Eq. 15-16:

  L = CE(x_l) + alpha(t) * (1 / M) sum_u H(onehot(argmax sg(q_u)), softmax(z_u)),
  alpha(t) = 0 (t < T1),  alpha_f (t - T1) / (T2 - T1) (T1 <= t < T2),  alpha_f (t >= T2).

One view: the prediction and its pseudo-label both come from the weak view a(x_u) (the paper
uses one stochastic pass with dropout; USB's `pseudolabel` also trains the weak view).
The strong view is unused.

Defaults and deviations: alpha_f = 3 is the paper's. The paper gives T1 = 100 and T2 = 600 in
epochs; here they are fractions of training, default t1 = 0 and t2 = 0.4 (USB's `unsup_warm_up`
0.4). The paper labels every unlabelled row; the default threshold tau = 0.95 keeps only rows
with max q >= tau (USB's `p_cutoff`), tau = 0 is the paper's "all rows".
"""
import jax
import jax.numpy as jnp

from w2s.losses import _soft_ce
from w2s.ssl import fixmatch
from w2s.ssl import supervised

NEEDS_TEACHER = False


def weight(step, total_steps: int, *, alpha_f: float = 3.0, t1: float = 0.0,
           t2: float = 0.4) -> jax.Array:
  """alpha(t) of Lee 2013 Eq. 16 with t = step / total_steps and T1, T2 as fractions (scalar)."""
  t = jnp.asarray(step, jnp.float32) / float(total_steps)
  if t2 <= t1:
    return jnp.where(t >= t1, alpha_f, 0.0).astype(jnp.float32)
  return alpha_f * jnp.clip((t - t1) / (t2 - t1), 0.0, 1.0)


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us=None, mask_u, step, total_steps,
         state=None, index_u=None, logits_ut=None, tau: float = 0.95, alpha_f: float = 3.0,
         t1: float = 0.0, t2: float = 0.4):
  """CE(x_l) + alpha(t) * mean_u[1(max q >= tau) CE(z(a(x_u)), onehot(argmax sg q))].

  Args: see `w2s.ssl`; tau (0.95; 0 keeps every row), alpha_f (3), t1, t2 (0, 0.4).

  Returns:
    (loss, {'loss_x', 'loss_u', 'mask_rate', 'weight'}, None).
  """
  del logits_us, state, index_u, logits_ut
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  conf, _ = fixmatch.confidence(logits_uw)
  keep = conf >= tau
  target = fixmatch.pseudo_targets(logits_uw)
  per_row = jnp.where(keep, _soft_ce.soft_ce(logits_uw, target), 0.0)
  loss_u = supervised.masked_mean(per_row, mask_u)
  w = weight(step, total_steps, alpha_f=alpha_f, t1=t1, t2=t2)
  aux = {'loss_x': loss_x, 'loss_u': loss_u, 'weight': w,
         'mask_rate': supervised.masked_mean(keep.astype(jnp.float32), mask_u)}
  return loss_x + w * loss_u, aux, None
