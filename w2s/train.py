"""TrainState, the pure jitted train/eval steps, the fit/predict loops and `train_and_evaluate`.

`train_step` and `eval_step` are pure functions of (state, batch); their dependencies (apply_fn,
loss_fn, optimizer) are bound with `functools.partial` before `jax.jit`, so a notebook can import and
call exactly what a pod runs. `fit` wraps them with data-parallel sharding, checkpoints, metrics
and resume; protocols (w2s/protocols/) chain `fit` and `predict` into stages.
"""
import functools
import json
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from w2s import checkpoint, metrics, registry, sharding
from w2s.data import pipeline
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


def _loss_sum(params, batch, rng, loss_state, *, apply_fn, loss_fn, step_frac):
  logits = apply_fn(params, batch, train=True, rng=rng)
  state_kw = {} if loss_state is None else {'loss_state': loss_state}
  per_ex, aux = loss_fn(logits=logits, labels=batch['label'], mask=batch['mask'],
                        step_frac=step_frac, batch=batch, **state_kw)
  mask = batch['mask']
  correct = (jnp.argmax(logits, -1) == jnp.argmax(batch['label'], -1)) * mask
  return jnp.sum(per_ex * mask), (jnp.sum(mask), jnp.sum(correct), aux)


def _microbatches(batch, accum_steps):
  """[B, ...] -> [A, B/A, ...], microbatch i = rows i, i+A, ...: each device's contiguous block of
  the sharded batch holds B/(A*devices) rows of every microbatch, so no rows move between devices."""
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
  loss_and_grad = jax.value_and_grad(functools.partial(
      _loss_sum, apply_fn=apply_fn, loss_fn=loss_fn, step_frac=state.step / total_steps),
      has_aux=True)

  def micro(carry, xs):
    grads, loss_state = carry
    mb, i = xs
    (l, (n, c, aux)), g = loss_and_grad(state.params, mb, jax.random.fold_in(rng, i), loss_state)
    aux = dict(aux)
    loss_state = aux.pop('loss_state', loss_state)  # stateful losses (e.g. elr) update theirs
    return (jax.tree.map(jnp.add, grads, g), loss_state), (l, n, c, aux)

  zeros = jax.tree.map(jnp.zeros_like, state.params)
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


def merge_params(init, pretrained):
  """`init` with every leaf that `pretrained` also has replaced by the pretrained value.

  Leaves only in `init` (e.g. a fresh classification head) keep their initialisation.
  """
  if not isinstance(init, dict):
    if getattr(pretrained, 'shape', None) != getattr(init, 'shape', None):
      raise UserError(f'pretrained tensor of shape {getattr(pretrained, "shape", None)} does not fit '
                      f'the model parameter of shape {init.shape}; check the model size preset')
    return jnp.asarray(pretrained, init.dtype)
  return {k: merge_params(v, pretrained[k]) if k in pretrained else v for k, v in init.items()}


def _spec_get(cfg, key, default=None):
  return cfg.get(key, default) if hasattr(cfg, 'get') else getattr(cfg, key, default)


def total_steps(cfg, num_examples: int) -> int:
  """`num_steps` when > 0, else `num_epochs` passes over the split (partial batches dropped)."""
  if _spec_get(cfg, 'num_steps', 0):
    return int(cfg.num_steps)
  return max(1, int(round(cfg.num_epochs * pipeline.steps_per_epoch(num_examples, cfg.batch_size))))


def _sample_rows(examples):
  return {k: v[:1] for k, v in examples.items() if np.asarray(v).dtype != object}


def fit(module, train_examples: dict, *, cfg, workdir: str, mesh, init_params=None,
        name: str = 'train') -> tuple[TrainState, dict]:
  """Trains `module` on featurized examples (soft 'label' [N, C]) and returns (state, last metrics).

  cfg: loss, optimizer, schedule, batch_size, num_epochs | num_steps, accum_steps, seed, log_every,
  checkpoint_every, keep_checkpoints. Checkpoints, metrics.jsonl and TensorBoard events go to
  `workdir`; a rerun with the same workdir resumes from the latest checkpoint (same data order and
  RNG), and a finished run returns its final state without training.
  """
  accum = int(_spec_get(cfg, 'accum_steps', 1))
  sharding.check_batch_size(cfg.batch_size, mesh)
  if cfg.batch_size % (mesh.devices.size * accum):
    raise UserError(f'batch_size={cfg.batch_size} must be divisible by devices x accum_steps = '
                    f'{mesh.devices.size} x {accum}')
  steps = total_steps(cfg, len(train_examples['id']))
  loss_fn = registry.bind('losses', cfg.loss)
  train_examples, extra = with_loss_state(train_examples, cfg.loss)
  tx, schedule = _make_tx(cfg, steps)
  apply_fn = linen_apply_fn(module)
  repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  sample = _sample_rows(train_examples)
  sample['mask'] = np.ones(1, np.float32)

  def init_fn(rng, pretrained):
    p_rng, d_rng, s_rng = jax.random.split(rng, 3)
    params = module.init({'params': p_rng, 'dropout': d_rng}, sample, train=False)['params']
    if pretrained is not None:
      params = merge_params(params, pretrained)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=s_rng, extra=extra())

  init = jax.jit(init_fn, out_shardings=repl)
  rng = jax.random.PRNGKey(cfg.seed)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                 every_steps=cfg.checkpoint_every, keep=cfg.keep_checkpoints)
  try:
    state, _ = ckpt.restore(jax.eval_shape(init, rng, init_params))
    if state is None:
      state = init(rng, init_params)
    elif jax.process_index() == 0:
      print(f'[{name}] resumed from step {int(state.step)} in {workdir}', flush=True)
    step_fn = jax.jit(functools.partial(
        train_step, apply_fn=apply_fn, loss_fn=loss_fn, tx=tx, schedule=schedule,
        total_steps=steps, accum_steps=accum),
        in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0)

    def batches(start):
      return (sharding.host_batch_to_global(b, mesh) for b in pipeline.prefetch(
          pipeline.train_batches(train_examples, global_batch=cfg.batch_size, seed=cfg.seed,
                                 start_step=start, num_steps=steps - start,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())))
    return run_loop(state, batches, step_fn=step_fn, cfg=cfg, steps=steps, ckpt=ckpt,
                    workdir=workdir, name=name)
  finally:
    ckpt.close()


def with_loss_state(examples: dict, loss_spec) -> tuple[dict, Callable[[], dict]]:
  """For a stateful loss (one whose function has `init_state`, e.g. elr): the examples with a
  dense 'index' [N] and a maker of `TrainState.extra` holding the loss state; else unchanged."""
  name, hparams = registry.split_spec(loss_spec)
  init_state = getattr(registry.get('losses', name), 'init_state', None)
  if init_state is None:
    return examples, dict
  n = len(examples['id'])
  num_classes = np.asarray(examples['label']).shape[-1]
  examples = {**examples, 'index': np.arange(n, dtype=np.int32)}
  return examples, lambda: {'loss': init_state(num_examples=n, num_classes=num_classes, **hparams)}


def _make_tx(cfg, steps):
  from w2s import optim
  return optim.make_optimizer(cfg.optimizer, cfg.schedule, steps)


def run_loop(state, batches: Callable[[int], Any], *, step_fn, cfg, steps: int, ckpt, workdir: str,
             name: str, examples_per_step: int | None = None):
  """Steps `state` from its step to `steps` over `batches(start)` (global batches), with metrics,
  the NaN guard, periodic and preemption checkpoints. Metrics may have a leading member axis
  (ensembles): they are logged as their mean."""
  start = int(state.step if np.ndim(state.step) == 0 else np.asarray(state.step).ravel()[0])
  last = {}
  if start >= steps:
    return state, last
  writer = metrics.Writer(workdir)
  progress = metrics.Progress(name, steps, unit='ex', start=start)
  per_step = examples_per_step or cfg.batch_size
  it = iter(batches(start))
  t0 = time.perf_counter()
  try:
    for step in range(start + 1, steps + 1):
      state, m = step_fn(state, next(it))
      preempted = ckpt.preempted(step)
      due_log = step % cfg.log_every == 0 or step == steps
      due_save = step % cfg.checkpoint_every == 0 or step == steps or preempted
      if due_log or due_save:
        last = {k: float(np.mean(v)) for k, v in jax.device_get(m).items()}
        metrics.check_finite(last, step, min(cfg.log_every, cfg.checkpoint_every))
      if due_log:
        rate = progress.update(step, per_step, f'loss {last["loss"]:.4f}')
        writer.write(step, {**last, 'examples_per_sec': rate})
      if due_save:
        ckpt.save(step, state, {'step': step, 'name': name, 'seconds': time.perf_counter() - t0},
                  force=True)
      if preempted and step < steps:
        raise checkpoint.Preempted(f'{name}: SIGTERM at step {step}/{steps}; checkpoint saved in '
                                   f'{workdir}; rerun the same command to resume')
  finally:
    writer.close()
  return state, last


def predict(module, params, examples: dict, *, batch_size: int, mesh, name: str = 'predict',
            apply_fn: Callable | None = None) -> dict:
  """{'id' [N], 'logits' [N, ...]} for every example exactly once, in the examples' order.

  `apply_fn(params, batch, *, train, rng)` defaults to the linen module's apply."""
  sharding.check_batch_size(batch_size, mesh, 'eval_batch_size')
  repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  step = jax.jit(functools.partial(eval_step, apply_fn=apply_fn or linen_apply_fn(module)),
                 in_shardings=(repl, data), out_shardings=data)
  n = len(examples['id'])
  total = -(-n // batch_size)
  progress = metrics.Progress(name, total, unit='ex')
  ids, logits = [], []
  for i, batch in enumerate(pipeline.eval_batches(examples, global_batch=batch_size,
                                                  process_index=jax.process_index(),
                                                  process_count=jax.process_count()), 1):
    g = sharding.host_batch_to_global(batch, mesh)
    out = sharding.to_host({'id': g['id'], 'mask': g['mask'], 'logits': step(params, g)})
    keep = out['mask'] > 0
    ids.append(out['id'][keep])
    logits.append(out['logits'][keep])
    if i == total or i % 20 == 0:
      progress.update(i, batch_size)
  return {'id': np.concatenate(ids), 'logits': np.concatenate(logits).astype(np.float32)}


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs the experiment `config` describes in `workdir`; what `python -m w2s.main` calls.

  Dispatches to the protocol plug-in `config.protocol.name` (supervised, weak_to_strong, ...), which
  returns the results dict it also writes to `<workdir>/results.json`.
  """
  checkpoint.check_writable(workdir)
  name, hparams = registry.split_spec(config.protocol)
  return registry.get('protocols', name)(config=config, workdir=workdir, **hparams)


def write_json_atomic(path: str, obj) -> None:
  """Writes JSON to `path` via a temp file + rename, so a crash never leaves half a file."""
  tmp = f'{path}.tmp.{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=float)
  os.replace(tmp, path)
