"""Mean Teacher: consistency with an exponential moving average of the student.

Tarvainen & Valpola 2017, "Mean teachers are better role models: Weight-averaged consistency
targets improve semi-supervised deep learning results" (NeurIPS):

  theta'_t = EMA_DECAY theta'_{t-1} + (1 - EMA_DECAY) theta_t          (done by the train step)
  L = CE(x_l) + w(t) * (1 / M) sum_u (1 / C) ||p_theta(A(x_u)) - p_theta'(a(x_u))||^2, p = softmax

The teacher's logits arrive as `logits_ut` and get no gradient. Defaults are those of the
authors' release (CuriousAI/mean-teacher, TensorFlow `Model.DEFAULT_HYPERPARAMS`): consistency
weight 100 with the sigmoid ramp-up exp(-5 (1 - T)^2) over 40000 of 150000 steps, squared error
averaged over classes, EMA decay 0.999 (0.99 during the ramp-up: `EMA_DECAY_RAMPUP`, which the
step may use while step < ramp_frac * total_steps).

Deviations: the release also applies the consistency to the labelled rows; here it is on the
unlabelled rows only (the step gives teacher logits for x_u alone). The student sees the strong
view and the teacher the weak one (the paper: two independent noisy views).
"""
import jax

from w2s.errors import UserError
from w2s.ssl import pi_model
from w2s.ssl import supervised

NEEDS_TEACHER = True
EMA_DECAY = 0.999
EMA_DECAY_RAMPUP = 0.99
RAMP_FRAC = 40000 / 150000


def loss(*, logits_x, labels_x, mask_x, logits_uw=None, logits_us, mask_u, step, total_steps,
         state=None, index_u=None, logits_ut=None, w_max: float = 100.0,
         ramp_frac: float = RAMP_FRAC):
  """CE(x_l) + w(t) * mean_u (1/C) ||p_student(A(x_u)) - sg(p_teacher(a(x_u)))||^2.

  Args: see `w2s.ssl`; logits_ut [M, C] (required) teacher logits on the weak view;
    w_max (100), ramp_frac (40000/150000).

  Returns:
    (loss, {'loss_x', 'loss_u', 'weight'}, None).
  """
  del logits_uw, state, index_u
  if logits_ut is None:
    raise UserError('mean_teacher needs the EMA teacher logits (logits_ut); train it with a '
                    'step that keeps the teacher (the module sets NEEDS_TEACHER = True)')
  loss_x = supervised.labelled_ce(logits_x, labels_x, mask_x)
  cons = pi_model.softmax_mse(logits_us, jax.lax.stop_gradient(logits_ut))
  loss_u = supervised.masked_mean(cons, mask_u)
  w = w_max * pi_model.sigmoid_rampup(step, total_steps, ramp_frac)
  return loss_x + w * loss_u, {'loss_x': loss_x, 'loss_u': loss_u, 'weight': w}, None
