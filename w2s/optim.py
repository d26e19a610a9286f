"""optax optimizers and learning-rate schedules from config sections.

    config.optimizer = dict(name='adamw', learning_rate=1e-3, weight_decay=0.01, clip_norm=1.0)
    config.schedule = dict(name='cosine', warmup_frac=0.0)

`name` is any optax optimizer (`optax.<name>`) or a dotted path `pkg.mod:fn` to a function with the
same signature, defined in `pkg.mod` (`registry.dotted`); the schedule is built from optax's schedules
and passed as its learning rate.

`with_master_weights` wraps any of them for low-precision (bfloat16) parameters.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from w2s import registry
from w2s.errors import UserError

SCHEDULES = ('constant', 'cosine', 'linear')


def make_schedule(spec, peak_lr: float, total_steps: int, where: str = 'config') -> optax.Schedule:
  """'constant' | 'cosine' (to `end_frac` * peak) | 'linear' (to 0), each with linear warmup."""
  name, hp = registry.split_spec(spec)
  warmup_frac = hp.pop('warmup_frac', 0.0)
  warmup_steps = hp.pop('warmup_steps', 0)
  end_frac = hp.pop('end_frac', 0.0)
  if hp:
    raise UserError(f'{where}.schedule {name!r} got unknown options {sorted(hp)}; it takes '
                    'warmup_steps, warmup_frac, end_frac')
  for key, v in (('warmup_frac', warmup_frac), ('end_frac', end_frac)):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
      raise UserError(f'{where}.schedule.{key}={v!r} must be a number in [0, 1]')
  if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
    raise UserError(f'{where}.schedule.warmup_steps={warmup_steps!r} must be an int >= 0')
  warmup = int(warmup_steps or round(warmup_frac * total_steps))
  decay_steps = max(total_steps - warmup, 1)
  if name == 'constant':
    main = optax.constant_schedule(peak_lr)
  elif name == 'cosine':
    main = optax.cosine_decay_schedule(peak_lr, decay_steps, alpha=end_frac)
  elif name == 'linear':
    main = optax.linear_schedule(peak_lr, peak_lr * end_frac, decay_steps)
  else:
    raise UserError(f'unknown schedule {name!r}; known: {", ".join(SCHEDULES)}')
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak_lr, warmup), main], [warmup])


def make_optimizer(opt_spec, sched_spec, total_steps: int, where: str = 'config'):
  """-> (optax.GradientTransformation, schedule); bad options are a UserError naming `where`."""
  name, hp = registry.split_spec(opt_spec)
  peak_lr = hp.pop('learning_rate', None)
  if peak_lr is None:
    raise UserError(f'{where}.optimizer needs a learning_rate')
  if isinstance(peak_lr, bool) or not isinstance(peak_lr, (int, float)) or not peak_lr > 0 \
      or peak_lr == float('inf'):
    raise UserError(f'{where}.optimizer.learning_rate={peak_lr!r} must be a number > 0')
  clip = hp.pop('clip_norm', None)
  if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                           or not clip > 0):
    raise UserError(f'{where}.optimizer.clip_norm={clip!r} must be a number > 0 (or absent)')
  schedule = make_schedule(sched_spec, peak_lr, total_steps, where)
  if ':' in name:
    factory = registry.dotted(name, 'optimizer')  # a function of the user's own module
  else:
    factory = getattr(optax, name, None)
    if factory is None or not callable(factory):
      raise UserError(f'unknown optimizer {name!r}; use an optax optimizer name such as adam, adamw, '
                      'sgd, lion, adafactor (or "pkg.module:fn")')
  names, var_kw = registry.accepted_kwargs(factory)
  unknown = sorted(set(hp) - names) if not var_kw else []
  if unknown:
    raise UserError(f'{where}.optimizer {name!r} has no option {unknown[0]!r}; its options: '
                    f'{", ".join(sorted(names - {"learning_rate"}))}')
  try:
    tx = factory(learning_rate=schedule, **hp)
  except TypeError as e:
    raise UserError(f'{where}.optimizer {name!r} rejected its options {sorted(hp)}: {e}') from e
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx, schedule


PARAM_DTYPES = ('float32', 'bfloat16')


class MasterWeightsState(NamedTuple):
  master: Any  # float32 copy of every trainable param; a float32 scalar placeholder elsewhere
  inner: Any   # the wrapped optimizer's state, over the float32 master tree


def with_master_weights(inner: optax.GradientTransformation, trainable=None
                        ) -> optax.GradientTransformation:
  """Float32 master weights for bfloat16 params (mixed-precision training, Micikevicius et al.
  2018, "Mixed Precision Training"; bf16 needs no loss scaling).

  The params the model computes with are bf16 (half the memory of the weights that FSDP gathers
  and of the gradients); the optimizer sees float32 gradients and a float32 master copy, and
  its moments are float32. The update it returns is the float32 difference between the new
  master and the current bf16 params, so `optax.apply_updates` (which adds in float32 and casts
  to the param's dtype) sets each param to the new master rounded to bf16 once, instead of
  accumulating bf16 rounding error step after step.

  Args:
    inner: the optimizer (it may be an `optax.multi_transform` that freezes some leaves).
    trainable: a tree of bools like the params (LoRA's `trainable_mask`), or None for all: frozen
      leaves keep no master copy (a scalar placeholder, so the tree keeps its structure) and
      their update is zero.
  """
  def is_float(x):
    return jnp.issubdtype(x.dtype, jnp.floating)

  def mask_of(params):
    return jax.tree.map(lambda _: True, params) if trainable is None else trainable

  def init(params):
    master = jax.tree.map(
        lambda p, t: p.astype(jnp.float32) if (t and is_float(p)) else jnp.zeros((), jnp.float32),
        params, mask_of(params))
    return MasterWeightsState(master, inner.init(_full(master, params, mask_of(params))))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError('with_master_weights needs the params in update()')
    mask = mask_of(params)
    full = _full(state.master, params, mask)
    g32 = jax.tree.map(lambda g: g.astype(jnp.float32) if is_float(g) else g, grads)
    u, inner_state = inner.update(g32, state.inner, full)
    new_full = optax.apply_updates(full, u)
    master = jax.tree.map(lambda m, n, t: n if (t and is_float(n)) else m, state.master, new_full,
                          mask)
    updates = jax.tree.map(
        lambda n, p, t: (n.astype(jnp.float32) - p.astype(jnp.float32)) if t
        else jnp.zeros_like(p), new_full, params, mask)
    return updates, MasterWeightsState(master, inner_state)

  return optax.GradientTransformation(init, update)


def _full(master, params, mask):
  """The tree the wrapped optimizer sees: float32 masters where trainable, the params elsewhere."""
  return jax.tree.map(lambda m, p, t: m if (t and jnp.issubdtype(p.dtype, jnp.floating)) else p,
                      master, params, mask)


def cast_params(params, dtype: str):
  """Floating leaves of `params` in `dtype` ('float32' | 'bfloat16'); others unchanged."""
  dt = jnp.dtype(dtype)
  return jax.tree.map(lambda p: p.astype(dt) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                      params)
