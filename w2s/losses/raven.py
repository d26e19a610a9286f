"""RAVEN: learned weights over K weak teachers, trained jointly with the student ("raven").

Jeon, Sobotka, Choi, Brbic 2025, "Weak-to-Strong Generalization under Distribution Shifts"
(github.com/mlbio-epfl/raven, `rw2s/vision/ensemble.py` and `run_w2s.py`). The student learns from
the teachers' weighted mixture

  t_i(w) = sum_k w_k y_ik / sum_c sum_k w_k y_ikc      (their `combine_logits(treat_as_probas)`)

of the K teachers' probabilities y_ik = batch['member_probs'][i, k] ([B, K, C]), with
CE_i = -sum_c t_ic log softmax(z_i)_c. The weights live on the simplex and are learned with the
student: after each batch, one SGD step on the same batch loss (logits held fixed, as their
`loss.backward()` before `ens_ws_opter.step()`), then their projection w <- max(w, 1e-6),
w <- w / sum w. With `per_example=True` each training row keeps its own weights (their
`ensemble_weights_per_sample`, [N, K] indexed by batch['index']).

Their "easy-sample guided initialization": for the first `agree_frac` of training only the
examples on which every teacher's argmax agrees count (the others weigh 0, the loss is still
the mean over the batch: `EnsembleDisagreementSchedule`), and the weights stay frozen for the
first `freeze_frac` (`ensemble_weights_freeze_first_frac_of_epochs`). Fractions of steps here
stand for their fractions of epochs.

Since each teacher's probabilities sum to 1, the batch loss is linear in w (sum_k w_k CE(y_k, p)
with sum_k w_k = 1), so the projected steps drift towards the vertex of the teacher the student
currently agrees with most; `lr` sets how fast (their configs ship lr=0: fixed uniform weights).
On class specialists (`csl`'s teachers) one global weight vector cannot help: use per_example.

Deviations: the weights are the simplex weights themselves (their parametrisation; not a
softmax of free logits); the weights start uniform (their default 'uniform' init; 'random' and
'entropy' inits are not offered); SGD's momentum buffer (torch.optim.SGD, dampening 0) is kept
only when `momentum` > 0. The state ({'weights': [N or 1, K]}, + 'momentum') is training state in
`TrainState.extra['loss']`, checkpointed, so a resumed run continues it exactly.
"""
import jax
import jax.numpy as jnp

from w2s.errors import UserError
from w2s.losses import _batch_stats
from w2s.losses import _members
from w2s.losses import _soft_ce

MIN_WEIGHT = 1e-6  # their clamp before renormalising


def _check_teachers(teachers) -> int:
  if not isinstance(teachers, int) or isinstance(teachers, bool) or teachers < 2:
    raise UserError(f'raven needs teachers=K (an int >= 2, the weak ensemble size), got '
                    f'{teachers!r}; set it to the weak role\'s ensemble.size')
  return teachers


def init_state(*, num_examples: int, num_classes: int, teachers=None, per_example: bool = False,
               momentum: float = 0.0, **hparams) -> dict:
  """{'weights': uniform [N, K] (per_example) or [1, K]} (+ 'momentum' zeros if momentum > 0)."""
  del num_classes, hparams
  k = _check_teachers(teachers)
  rows = num_examples if per_example else 1
  state = {'weights': jnp.full((rows, k), 1.0 / k, jnp.float32)}
  if momentum > 0:
    state['momentum'] = jnp.zeros((rows, k), jnp.float32)
  return state


def mixture(weights: jax.Array, member_probs: jax.Array) -> jax.Array:
  """t [B, C] = sum_k w_k y_k / its total, for weights [B, K] or [1, K] and member_probs [B, K, C]."""
  mixed = jnp.einsum('bk,bkc->bc', jnp.broadcast_to(weights, member_probs.shape[:2]),
                     member_probs)
  return mixed / jnp.sum(mixed, axis=-1, keepdims=True)


def all_agree(member_probs: jax.Array) -> jax.Array:
  """[B] 1.0 where every teacher's argmax is the first teacher's, else 0."""
  votes = jnp.argmax(member_probs, axis=-1)  # [B, K]
  return jnp.all(votes == votes[:, :1], axis=-1).astype(jnp.float32)


def loss(*, logits: jax.Array, labels: jax.Array, mask: jax.Array, step_frac=0.0, batch=None,
         loss_state=None, teachers=None, per_example: bool = False, lr: float = 0.01,
         momentum: float = 0.0, agree_frac: float = 0.0, freeze_frac: float = 0.0
         ) -> tuple[jax.Array, dict]:
  """s_i CE(z_i, t_i(w)) per example, and the weights after one projected SGD step.

  Args:
    logits: [B, C] student logits z.
    labels: [B, C] the pipeline's weak labels (unused: the target is the learned mixture).
    mask: [B] 1 real, 0 padding (returns 0; its weights are not touched).
    step_frac: fraction of training done (the agree / freeze phases).
    batch: reads 'member_probs' [B, K, C] and 'index' int [B] (rows of the training split).
    loss_state: {'weights': [N or 1, K]} (+ 'momentum') from `init_state`, kept by the trainer.
    teachers: K, the number of weak teachers (the weak role's ensemble.size).
    per_example: one weight vector per training row instead of one for all.
    lr: SGD learning rate of the weights (their `ensemble_weights_opter_cfg.lr`; 0 = fixed
      uniform weights, the plain ensemble mean).
    momentum: SGD momentum of the weights (torch semantics).
    agree_frac: for step_frac < agree_frac only rows where all teachers agree count (s_i).
    freeze_frac: for step_frac < freeze_frac the weights are not updated.

  Returns:
    (per_example [B], {'weight_k': mean weight of teacher k (over rows in per_example mode),
                       'kept': fraction of real rows with s_i = 1,
                       'loss_state': the updated state}).
  """
  del labels
  k = _check_teachers(teachers)
  if loss_state is None or batch is None or 'index' not in batch:
    raise UserError('raven keeps learned teacher weights: train it with w2s.train.fit, which '
                    'passes loss_state and batch["index"]')
  probs = _members.member_probs(batch, logits, 'raven', teachers=k,
                                 fix='give the weak role ensemble=dict(size=K)')
  real = _batch_stats.real(mask)
  # padded rows: a valid mixture (uniform members) so no NaN reaches the masked sums
  probs = jnp.where(real[:, None, None] > 0, probs, 1.0 / probs.shape[-1])
  s = jnp.where(step_frac < agree_frac, all_agree(probs), 1.0) * real  # [B]
  n_real = jnp.maximum(_batch_stats.count(mask), 1.0)
  all_w = jnp.asarray(loss_state['weights'])
  rows = batch['index']
  w = all_w[rows] if per_example else all_w                            # [B, K] or [1, K]
  logp = jax.lax.stop_gradient(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))

  def batch_loss(w):  # the trainer's objective: sum_i s_i CE_i / B_real
    return jnp.sum(s * -jnp.sum(mixture(w, probs) * logp, axis=-1)) / n_real

  grad = jax.grad(batch_loss)(w)
  ce = _soft_ce.soft_ce(logits, jax.lax.stop_gradient(mixture(w, probs)))
  per_ex = _soft_ce.zero_padding(s * ce, mask)
  update = jnp.asarray(step_frac >= freeze_frac, jnp.float32)
  state = dict(loss_state)
  if momentum > 0:
    old_buf = jnp.asarray(loss_state['momentum'])
    buf = momentum * (old_buf[rows] if per_example else old_buf) + grad
    grad = buf
  new_w = w - lr * grad
  new_w = jnp.maximum(new_w, MIN_WEIGHT)
  new_w = new_w / jnp.sum(new_w, axis=-1, keepdims=True)
  if per_example:  # scatter deltas: padding rows (possibly repeated indices) add exactly 0
    keep = (update * real)[:, None]
    state['weights'] = all_w.at[rows].add(keep * (new_w - w))
    if momentum > 0:
      state['momentum'] = old_buf.at[rows].add(keep * (buf - old_buf[rows]))
  else:
    state['weights'] = jnp.where(update > 0, new_w, w)
    if momentum > 0:
      state['momentum'] = jnp.where(update > 0, buf, old_buf)
  mean_w = jnp.mean(state['weights'], axis=0)
  aux = {f'weight_{j}': mean_w[j] for j in range(k)}
  aux['kept'] = jnp.sum(s) / n_real
  aux['loss_state'] = state
  return per_ex, aux


loss.init_state = init_state  # how the trainer finds the state of a stateful loss
