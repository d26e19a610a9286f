"""Model selection and early stopping on a held-out slice, kept in the train state.

With `select='best'` the state carries `extra['select']`: a copy of the parameters with the lowest
held-out loss so far, that loss, its step and the number of evaluations since it improved. It is
checkpointed with the rest, so a resumed run selects exactly as an uninterrupted one. Ensembles
carry one entry per member (the leading K axis of every leaf), and each member keeps its own best.
Which labels the held-out loss uses is the caller's choice and the point of the exercise: in a
weak-to-strong study a student is selected on held-out *weak* labels, never on ground truth of B
or test (EleutherAI's w2s does the same).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from w2s import sharding


def init(opts, params) -> dict:
  """The `extra` entry of a fresh state (empty unless `opts.select == 'best'` or patience > 0)."""
  if opts.select != 'best' and not opts.patience:
    return {}
  keep = params if opts.select == 'best' else {}
  return {'select': {'params': jax.tree.map(jnp.copy, keep), 'loss': jnp.float32(jnp.inf),
                     'step': jnp.int32(0), 'bad': jnp.int32(0)}}


@functools.partial(jax.jit, donate_argnums=0)
def _update(sel, params, val_loss, step):
  improved = val_loss < sel['loss']                                 # [] or [K]

  def pick(best, new):
    m = improved.reshape(improved.shape + (1,) * (new.ndim - improved.ndim))
    return jnp.where(m, new, best)
  return {'params': jax.tree.map(pick, sel['params'], params) if sel['params'] else {},
          'loss': jnp.where(improved, val_loss, sel['loss']),
          'step': jnp.where(improved, step, sel['step']),
          'bad': jnp.where(improved, 0, sel['bad'] + 1)}


def update(state, val_loss, step: int, patience: int):
  """(state with the selection updated by this evaluation, whether to stop early)."""
  if 'select' not in state.extra:
    return state, False
  old = state.extra['select']
  shards = jax.tree.map(lambda x: x.sharding, old)
  sel = _update(old, state.params, jnp.asarray(val_loss, jnp.float32), jnp.int32(step))
  sel = jax.tree.map(jax.device_put, sel, shards)  # keep the state's layout (partition rules)
  state = state.replace(extra={**state.extra, 'select': sel})
  return state, stopped(state, patience)


def stopped(state, patience: int) -> bool:
  """True once every member went `patience` evaluations without improving (0: never)."""
  if not patience or 'select' not in state.extra:
    return False
  return bool(np.all(sharding.to_host(state.extra['select']['bad']) >= patience))


def selected(state, opts):
  """`state` with the selected parameters (the best held-out ones, or the last)."""
  if opts.select != 'best' or 'select' not in state.extra:
    return state
  best_loss = sharding.to_host(state.extra['select']['loss'])
  if not np.all(np.isfinite(best_loss)):  # never evaluated: keep the last parameters
    return state
  return state.replace(params=state.extra['select']['params'])


def summary(state) -> dict:
  """{'best_val_loss', 'best_step', 'evals_since_best'} of a state that selects (else {})."""
  if 'select' not in state.extra:
    return {}
  host = sharding.to_host({k: v for k, v in state.extra['select'].items() if k != 'params'})
  return {'best_val_loss': host['loss'].tolist(), 'best_step': host['step'].tolist(),
          'evals_since_best': host['bad'].tolist()}
