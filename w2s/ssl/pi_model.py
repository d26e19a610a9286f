"""Pi-model: two stochastic passes of the student should agree.

Laine & Aila 2017, "Temporal Ensembling for Semi-Supervised Learning" (ICLR), the Pi-model:

  L = CE(x_l) + w(t) * (1 / M) sum_u (1 / C) ||softmax(z(A(x_u))) - sg(softmax(z(a(x_u))))||^2,
  w(t) = w_max * exp(-5 (1 - T)^2),  T = min(1, t / ramp),

the squared error averaged over classes (the paper's 1 / C), the Gaussian ("sigmoid") ramp-up
over the first 80 of their 300 epochs, hence ramp_frac = 80 / 300.

Defaults and deviations:
- w_max = 10, USB's CIFAR-10 setting. The paper's w_max is 100 scaled by the labelled share n / N
  (100 * 4000 / 50000 = 8 for CIFAR-10 with 4000 labels); pass w_max = 100 * n / N for that.
- The two passes here are the weak and the strong view (the paper: two passes of the same
  augmentation with different dropout and noise); feed two weak views to get the paper's setup.
- The paper back-propagates through both passes; the default stops the gradient of the weak
  pass (as USB does); stop_gradient=False gives the symmetric original.
"""
import jax
import jax.numpy as jnp

from w2s.ssl import supervised

NEEDS_TEACHER = False
RAMP_FRAC = 80 / 300


def sigmoid_rampup(step, total_steps: int, ramp_frac: float) -> jax.Array:
  """exp(-5 (1 - T)^2), T = clip(step / (ramp_frac * total_steps), 0, 1); 1 when ramp_frac <= 0."""
  if ramp_frac <= 0:
    return jnp.ones((), jnp.float32)
  t = jnp.clip(jnp.asarray(step, jnp.float32) / (ramp_frac * float(total_steps)), 0.0, 1.0)
  return jnp.exp(-5.0 * (1.0 - t) ** 2)


def softmax_mse(logits_a: jax.Array, logits_b: jax.Array) -> jax.Array:
  """(1 / C) ||softmax(a) - softmax(b)||^2 per row: [M, C] x2 -> [M]."""
  pa = jax.nn.softmax(logits_a.astype(jnp.float32), axis=-1)
  pb = jax.nn.softmax(logits_b.astype(jnp.float32), axis=-1)
  return jnp.mean((pa - pb) ** 2, axis=-1)


def loss(*, logits_x, labels_x, mask_x, logits_uw, logits_us, mask_u, step, total_steps,
         state=None, index_u=None, logits_ut=None, w_max: float = 10.0,
         ramp_frac: float = RAMP_FRAC, stop_gradient: bool = True):
  """CE(x_l) + w(t) * mean_u (1/C) ||p(A(x_u)) - sg(p(a(x_u)))||^2 (Laine & Aila 2017).

  Args: see `w2s.ssl`; w_max (10), ramp_frac (80/300), stop_gradient (True: no gradient
    through the weak view).

  Returns:
    (loss, {'loss_x', 'loss_u', 'weight'}, None).
  """
  del state, index_u, logits_ut
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  target = jax.lax.stop_gradient(logits_uw) if stop_gradient else logits_uw
  loss_u = supervised.masked_mean(softmax_mse(logits_us, target), mask_u)
  w = w_max * sigmoid_rampup(step, total_steps, ramp_frac)
  return loss_x + w * loss_u, {'loss_x': loss_x, 'loss_u': loss_u, 'weight': w}, None
