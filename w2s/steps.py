"""The pure jitted steps: `TrainState`, `train_step`, `eval_step`, the apply functions and the
loss check that traces a loss plug-in on abstract inputs before any stage trains.

`train_step` and `eval_step` are pure functions of (state, batch); their dependencies (apply_fn,
loss_fn, optimizer) are bound with `functools.partial` before `jax.jit`, so a notebook can import
and call exactly what a pod runs. The fit loop around them (sharding, checkpoints, selection,
resume) is `w2s.train`; prediction and held-out evaluation are `w2s.predict`.
"""
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from w2s import options
from w2s.errors import UserError



@flax.struct.dataclass
class TrainState:
  """step, params, optimizer state, the run's base RNG key, and `extra` for things like an EMA of
  the params or per-example buffers (kept in checkpoints like the rest)."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  extra: dict = flax.struct.field(default_factory=dict)


def _loss_sum(params, batch, rng, loss_state, *, apply_fn, loss_fn, step_frac, step_kw):
  logits = apply_fn(params, batch, train=True, rng=rng)
  state_kw = {} if loss_state is None else {'loss_state': loss_state}
  per_ex, aux = loss_fn(logits=logits, labels=batch['label'], mask=batch['mask'],
                        step_frac=step_frac, batch=batch, **state_kw, **step_kw)
  mask = batch['mask']
  aux = dict(aux)
  # a token-level loss says what counts as correct ([B]: token accuracy, pair accuracy)
  correct = aux.pop('correct', None)
  if correct is None:
    correct = jnp.argmax(logits, -1) == jnp.argmax(batch['label'], -1)
  return jnp.sum(per_ex * mask), (jnp.sum(mask), jnp.sum(correct * mask), aux)


def loss_step_kwargs(loss_fn, step, total_steps) -> dict:
  """`step` / `total_steps` for a loss that takes them (exact integer schedules), else {}."""
  names, var_kw = options.accepted_kwargs(loss_fn)
  return {k: v for k, v in (('step', step), ('total_steps', total_steps)) if var_kw or k in names}


def _microbatches(batch, accum_steps):
  """[B, ...] -> [A, B/A, ...], microbatch i = rows i, i+A, ...: each device's contiguous block of
  the sharded batch holds B/(A*devices) rows of every microbatch, so no rows move between devices.
  Batches of whole groups (`batch_groups`) come interleaved to match: microbatch i is the i-th
  block of whole groups (`pipeline.train_batches`)."""
  return jax.tree.map(
      lambda x: jnp.swapaxes(x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]), 0, 1),
      batch)


def train_step(state: TrainState, batch: dict, *, apply_fn: Callable, loss_fn: Callable,
               tx: optax.GradientTransformation, schedule: Callable, total_steps: int,
               accum_steps: int = 1) -> tuple[TrainState, dict]:
  """One optimizer update on a (global) batch; the loss is mask-weighted over all microbatches.

  With accum_steps = A > 1 the loss runs on A microbatches of B/A rows and gradients are summed
  (padding excluded), so per-example losses give the full-batch update; batch statistics inside
  a loss (logconf's quantile, window's median) are then taken per microbatch, still across all
  devices.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  # Losses that switch at an exact fraction of training (logconf's faithful warmup) take the
  # integer step and the static total: step / total in float32 rounds (3/30 > 0.1 under jit).
  step_kw = loss_step_kwargs(loss_fn, state.step, total_steps)
  loss_and_grad = jax.value_and_grad(functools.partial(
      _loss_sum, apply_fn=apply_fn, loss_fn=loss_fn, step_frac=state.step / total_steps,
      step_kw=step_kw), has_aux=True)

  def micro(carry, xs):
    grads, loss_state = carry
    mb, i = xs
    (l, (n, c, aux)), g = loss_and_grad(state.params, mb, jax.random.fold_in(rng, i), loss_state)
    aux = dict(aux)
    loss_state = aux.pop('loss_state', loss_state)  # stateful losses (e.g. elr) update theirs
    return (jax.tree.map(jnp.add, grads, g), loss_state), (l, n, c, aux)

  # gradients accumulate in float32 even for bf16 params (param_dtype='bfloat16')
  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.promote_types(p.dtype, jnp.float32)),
                       state.params)
  if accum_steps == 1:  # no loop: XLA:CPU runs convolution gradients 20-50x slower inside one
    (grads, loss_state), outs = micro((zeros, state.extra.get('loss')),
                                      (batch, jnp.zeros((), jnp.int32)))
    loss_sum, count, correct, aux = jax.tree.map(lambda x: x[None], outs)
  else:
    (grads, loss_state), (loss_sum, count, correct, aux) = jax.lax.scan(
        micro, (zeros, state.extra.get('loss')),
        (_microbatches(batch, accum_steps), jnp.arange(accum_steps)))
  count = jnp.maximum(count.sum(), 1.0)
  grads = jax.tree.map(lambda g: g / count, grads)
  aux = jax.tree.map(lambda a: jnp.mean(a, 0), aux)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  out = {'loss': loss_sum.sum() / count, 'accuracy': correct.sum() / count, 'grad_norm': optax.tree.norm(grads),
         'learning_rate': schedule(state.step), **aux}
  extra = state.extra if loss_state is None else {**state.extra, 'loss': loss_state}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra), out


def eval_step(params, batch: dict, *, apply_fn: Callable) -> jax.Array:
  """Logits [B, C] of a (global) batch, without dropout."""
  return apply_fn(params, batch, train=False, rng=None)


def linen_apply_fn(module) -> Callable:
  """`apply_fn(params, batch, *, train, rng) -> logits` for a flax.linen module."""
  def apply_fn(params, batch, *, train, rng):
    rngs = {'dropout': rng} if (train and rng is not None) else {}
    return module.apply({'params': params}, batch, train=train, rngs=rngs)
  return apply_fn


def train_apply_fn(module, opts) -> Callable:
  """`linen_apply_fn(module)`, with the stage's `augment` (if any) applied to every training
  batch inside the jitted step: a pure function of (rng, batch), so a resumed run draws the same
  augmentations. Evaluation and prediction (train=False) see the clean inputs."""
  apply_fn = linen_apply_fn(module)
  if opts.augment is None:
    return apply_fn
  augment = options.build(opts.augment, 'train.augment')

  def augmented(params, batch, *, train, rng):
    if train and rng is not None:
      rng, aug_rng = jax.random.split(rng)
      batch = augment(aug_rng, batch)
    return apply_fn(params, batch, train=train, rng=rng)
  return augmented


def check_loss(p: 'options.Plugin', *, num_classes: int, where: str,
               batch_extras: dict | None = None, expect: str | None = None) -> None:
  """Traces the loss once on abstract inputs, as the train step calls it: a loss with a wrong
  signature or return value is a UserError here, before any stage trains, not after hours.

  `expect`: the kind of loss the stage trains with, as the loss's `inputs` attribute says:
  None (classification: logits [B, C]), 'tokens' (logits [B, T, V] of sequences) or 'pairs'
  (logits [B, 2, T, V] of preference pairs); a loss of another kind is refused."""
  b, c = 8, num_classes
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  fn = p.entry()
  bound = functools.partial(fn, **p.hparams)
  init_state = getattr(fn, 'init_state', None)
  batch = {'label': f32(b, c), 'mask': f32(b), 'id': jax.ShapeDtypeStruct((b,), jnp.int32),
           **(batch_extras or {})}
  logits_shape = (b, c)
  inputs = getattr(fn, 'inputs', None)
  if inputs != expect:
    what = {None: 'a classification loss', 'tokens': 'a sequence (SFT) loss',
            'pairs': 'a preference-pair loss'}
    raise UserError(f'{where}: loss {p.name!r} is {what.get(inputs, repr(inputs))} but this stage '
                    f'trains with {what.get(expect, repr(expect))}; choose a loss of that kind '
                    '(python -m w2s.main --list)')
  if inputs is not None:  # token-level: logits [B, T, V] (sequences) or [B, 2, T, V] (pairs)
    lead = {'tokens': (b,), 'pairs': (b, 2)}.get(inputs)
    if lead is None:
      raise UserError(f'{where}: loss {p.name!r} has inputs={inputs!r}; a token-level loss '
                      "declares inputs='tokens' or 'pairs'")
    t, v = 6, 11
    logits_shape = lead + (t, v)
    batch.update(input_ids=jax.ShapeDtypeStruct(lead + (t,), jnp.int32),
                 attention_mask=jax.ShapeDtypeStruct(lead + (t,), jnp.int32),
                 loss_mask=f32(*lead, t), ref_logp=f32(*lead), confidence=f32(b))
    c = 1 if inputs == 'tokens' else 2
    batch['label'] = f32(b, c)
  if init_state is not None:
    batch['index'] = jax.ShapeDtypeStruct((b,), jnp.int32)
  def call(logits, labels, mask, step_frac, batch, step):
    kw = loss_step_kwargs(bound, step, 100)
    if init_state is not None:
      kw['loss_state'] = init_state(num_examples=b, num_classes=c, **p.hparams)
    return bound(logits=logits, labels=labels, mask=mask, step_frac=step_frac, batch=batch, **kw)

  sig = 'loss(*, logits, labels, mask, step_frac, batch=None, **hparams)'
  try:
    out = jax.eval_shape(call, f32(*logits_shape), f32(b, c), f32(b), f32(), batch,
                         jax.ShapeDtypeStruct((), jnp.int32))
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # a user's loss can fail in any way
    raise UserError(f'{where}: loss {p.name!r} fails when called as {sig} '
                    f'({type(e).__name__}: {" ".join(str(e).split())[:200]})') from e
  ok = (isinstance(out, tuple) and len(out) == 2 and hasattr(out[0], 'shape')
        and tuple(out[0].shape) == (b,) and isinstance(out[1], dict))
  if not ok:
    got = jax.tree.map(lambda x: tuple(getattr(x, 'shape', ())), out)
    raise UserError(f'{where}: loss {p.name!r} returned {got}; it must return (per-example losses '
                    f'[B], dict of scalars)')
