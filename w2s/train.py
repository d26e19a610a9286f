"""TrainState, the pure jitted train/eval steps, the fit/predict loops and `train_and_evaluate`.

`train_step` and `eval_step` are pure functions of (state, batch); their dependencies (apply_fn,
loss_fn, optimizer) are bound with `functools.partial` before `jax.jit`, so a notebook can import and
call exactly what a pod runs. `fit` wraps them with data-parallel sharding, checkpoints, metrics
and resume; protocols (w2s/protocols/) chain `fit` and `predict` into stages.
"""
import collections
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

from w2s import (checkpoint, memory, metrics, optim, options, partition, plots, preemption,
                 registry, selection, sharding)
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


def _loss_sum(params, batch, rng, loss_state, *, apply_fn, loss_fn, step_frac, step_kw):
  logits = apply_fn(params, batch, train=True, rng=rng)
  state_kw = {} if loss_state is None else {'loss_state': loss_state}
  per_ex, aux = loss_fn(logits=logits, labels=batch['label'], mask=batch['mask'],
                        step_frac=step_frac, batch=batch, **state_kw, **step_kw)
  mask = batch['mask']
  correct = (jnp.argmax(logits, -1) == jnp.argmax(batch['label'], -1)) * mask
  return jnp.sum(per_ex * mask), (jnp.sum(mask), jnp.sum(correct), aux)


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


def total_steps(opts, num_examples: int) -> int:
  """`num_steps` when > 0, else `num_epochs` passes over the split (partial batches dropped)."""
  opts = options.TrainOptions.coerce(opts)
  if opts.num_steps:
    return opts.num_steps
  return max(1, int(round(opts.num_epochs * pipeline.steps_per_epoch(num_examples, opts.batch_size))))


def _sample_rows(examples):
  return pipeline.sample_rows(examples, 1)


def group_key(opts) -> str | None:
  """The column whole groups of which every batch holds: `train.group_by`, else the loss's own
  `group_by` attribute (the proportion loss's 'bag_id'), else None (rows shuffled)."""
  return opts.group_by or getattr(opts.loss.entry(), 'group_by', None)


def batch_groups(examples, opts, name: str) -> np.ndarray | None:
  """The group column [N] `fit` orders batches by (checked: in the split, groups of one size
  dividing every microbatch), or None."""
  key = group_key(opts)
  if key is None:
    return None
  if opts.ssl is not None:
    raise UserError(f'{name}: train.ssl draws its own batches; batches of whole {key!r} groups '
                    f'(loss {opts.loss.name!r} or train.group_by) are not supported with it')
  if not isinstance(examples, dict) or key not in examples:
    raise UserError(f'{name}: batches of whole groups need a {key!r} column in the in-memory '
                    f'training split (loss {opts.loss.name!r} or train.group_by={key!r}); use a '
                    'protocol that makes it (label_proportions)')
  groups = np.asarray(examples[key])
  pipeline.group_rows(groups, opts.batch_size, opts.accum_steps, key)  # the checks, now
  return groups


def run_fingerprint(opts, examples: dict, extra: dict | None) -> dict:
  """What determines a run's parameters: its options, the caller's description (model, data
  source, ...) and the identity of the training examples (count and a digest of their ids)."""
  import hashlib
  ids = np.ascontiguousarray(pipeline.example_ids(examples))
  return {'train': opts.result_key(), **(extra or {}),
          'examples': {'n': int(len(ids)), 'ids': hashlib.sha256(ids.tobytes()).hexdigest()[:16]}}


def fit(module, train_examples: dict, *, cfg, workdir: str, mesh, init_params=None,
        name: str = 'train', fingerprint: dict | None = None, val_examples: dict | None = None,
        eval_batch_size: int | None = None,
        unlabelled: dict | None = None) -> tuple[TrainState, dict]:
  """Trains `module` on featurized examples (soft 'label' [N, C]) and returns (state, last metrics).

  cfg: `options.TrainOptions` (or a flat section it accepts). Checkpoints, metrics.jsonl,
  TensorBoard events and curves.png go to `workdir`; a rerun with the same workdir resumes from
  the latest readable checkpoint (same data order and RNG) when the run's fingerprint (the
  options, `fingerprint` and the examples' ids) matches, refuses otherwise, and a finished run
  returns its final state without training. `init_params`: a param tree merged over the init
  (pretrained weights), or a loader `f(targets) -> tree` called with the params'
  ShapeDtypeStructs and shardings only when the run starts afresh; by default a model with
  `pretrained=...` gets its checkpoint read tensor by tensor straight into its shards
  (`hf_import.init_params` with `targets`). With `val_examples` and `cfg.eval_every` > 0 the
  held-out loss and accuracy (against the val examples' own labels) are logged every that many
  steps, and `cfg.select='best'` returns the parameters with the lowest held-out loss.
  With `cfg.ssl` (an algorithm of `w2s.ssl`) each step also reads a batch of `unlabelled`
  examples (their labels hidden from the algorithm; see `w2s.ssl_step`). When the loss asks for
  whole groups (the proportion loss's bags) or `cfg.group_by` names a column, every batch and
  microbatch holds whole groups of it (`batch_groups`).
  """
  opts = options.TrainOptions.coerce(cfg)
  semi = opts.ssl is not None
  if semi:
    from w2s import ssl_step
    if unlabelled is None:
      raise UserError(f'{name}: train.ssl={opts.ssl.name!r} needs unlabelled examples; use a '
                      'protocol that has them (ssl) or drop train.ssl')
    ssl_step.check(opts, mesh, pipeline.num_rows(unlabelled))
    unlabelled = ssl_step.unlabelled_examples(unlabelled)
    fingerprint = {**(fingerprint or {}), 'unlabelled': run_fingerprint(
        opts, unlabelled, None)['examples']}
  sharding.check_batch_size(opts.batch_size, mesh)
  n_batch = sharding.batch_size_divisor(mesh)
  if opts.batch_size % (n_batch * opts.accum_steps):
    raise UserError(f'batch_size={opts.batch_size} must be divisible by devices x accum_steps = '
                    f'{n_batch} x {opts.accum_steps}')
  steps = total_steps(opts, pipeline.num_rows(train_examples))
  groups = batch_groups(train_examples, opts, name)
  loss_fn = functools.partial(opts.loss.entry(), **opts.loss.hparams)
  train_examples, extra = with_loss_state(train_examples, opts.loss.spec())
  apply_fn = train_apply_fn(module, opts)
  repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  sample = _sample_rows(train_examples)
  sample['mask'] = np.ones(1, np.float32)
  tx, schedule = _make_tx(opts, steps, module, sample)
  evaluator = make_evaluator(module, val_examples, opts, mesh=mesh, name=name,
                             batch_size=eval_batch_size or opts.batch_size)

  def init_fn(rng, pretrained):
    p_rng, d_rng, s_rng = jax.random.split(rng, 3)
    params = module.init({'params': p_rng, 'dropout': d_rng}, sample, train=False)['params']
    if pretrained is not None:
      params = merge_params(params, pretrained)
    if opts.param_dtype != 'float32':
      params = optim.cast_params(params, opts.param_dtype)
    more = {}
    if semi:
      more = ssl_step.init_extra(opts, params, np.shape(sample['label'])[-1],
                                 pipeline.num_rows(unlabelled))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=s_rng, extra={**extra(), **selection.init(opts, params), **more})

  rng = jax.random.PRNGKey(opts.seed)
  if init_params is None and getattr(module, 'pretrained', None):
    init_params = _checkpoint_loader(module, sample)
  lazy = callable(init_params)  # a loader: called with the sharded targets, only if not resuming
  abstract = jax.eval_shape(init_fn, rng, None if lazy else init_params)
  # where every leaf lives: replicated, or split over 'fsdp' / 'tensor' by the partition rules
  state_sh = partition.shardings(abstract, mesh, opts.partition,
                                 getattr(module, 'partition_rules', None))
  init = jax.jit(init_fn, out_shardings=state_sh)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                 every_steps=opts.checkpoint_every, keep=opts.keep_checkpoints)
  try:
    checkpoint.check_fingerprint(workdir, run_fingerprint(opts, train_examples, fingerprint),
                                 has_checkpoints=ckpt.latest_step() is not None)
    state, _ = ckpt.restore(partition.with_shardings(abstract, state_sh))
    if state is None:
      pretrained = init_params
      if lazy:
        pretrained = init_params(partition.with_shardings(abstract.params, state_sh.params))
      state = init(rng, pretrained)
      del pretrained
    elif jax.process_index() == 0 and int(state.step) < steps:
      print(f'[{name}] resumed from step {int(state.step)} in {workdir}', flush=True)
    step = functools.partial(
        train_step, apply_fn=apply_fn, loss_fn=loss_fn, tx=tx, schedule=schedule,
        total_steps=steps, accum_steps=opts.accum_steps)
    if semi:
      step = ssl_step.make_step(opts, apply_fn=apply_fn, tx=tx, schedule=schedule,
                                total_steps=steps)
    step_fn = jax.jit(step, in_shardings=(state_sh, data), out_shardings=(state_sh, repl),
                      donate_argnums=0)

    def batches(start):
      if semi:
        return ssl_step.batches(train_examples, unlabelled, opts, mesh, start, steps)
      return (sharding.host_batch_to_global(b, mesh) for b in pipeline.prefetch(
          pipeline.train_batches(train_examples, global_batch=opts.batch_size, seed=opts.seed,
                                 start_step=start, num_steps=steps - start,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count(), groups=groups,
                                 accum_steps=opts.accum_steps)))
    if memory.enabled() and not semi and int(np.max(state.step)) < steps:  # check before running
      first = next(pipeline.train_batches(
          train_examples, global_batch=opts.batch_size, seed=opts.seed, start_step=0, num_steps=1,
          process_index=jax.process_index(), process_count=jax.process_count()))
      batch_abs = {k: jax.ShapeDtypeStruct((opts.batch_size,) + np.shape(v)[1:], np.asarray(v).dtype,
                                           sharding=data) for k, v in first.items()}
      memory.report(step_fn, partition.with_shardings(abstract, state_sh), batch_abs, name=name)
    state, last = run_loop(state, batches, step_fn=step_fn, cfg=opts, steps=steps, ckpt=ckpt,
                           workdir=workdir, name=name, evaluator=evaluator)
  finally:
    ckpt.close()
  return selected_with_val(state, opts, last, evaluator)


def _checkpoint_loader(module, sample) -> Callable:
  """The loader `fit` uses for a model with `pretrained=...`: its checkpoint read tensor by
  tensor into the target shards (zero head, fresh LoRA adapters)."""
  def load(targets):
    from w2s.models import hf_import
    return hf_import.init_params(module, jax.random.PRNGKey(0), sample, targets=targets)
  return load


def selected_with_val(state, opts, last: dict, evaluator) -> tuple[TrainState, dict]:
  """(the selected state, last metrics + the held-out 'val_loss' / 'val_accuracy' of the
  selected parameters, means over members)."""
  state = selection.selected(state, opts)
  if evaluator is not None:
    last = {**last, **{k: float(np.mean(v)) for k, v in evaluator(state.params).items()}}
  return state, last


def check_loss(p: 'options.Plugin', *, num_classes: int, where: str,
               batch_extras: dict | None = None) -> None:
  """Traces the loss once on abstract inputs, as the train step calls it: a loss with a wrong
  signature or return value is a UserError here, before any stage trains, not after hours."""
  b, c = 8, num_classes
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  fn = p.entry()
  bound = functools.partial(fn, **p.hparams)
  init_state = getattr(fn, 'init_state', None)
  batch = {'label': f32(b, c), 'mask': f32(b), 'id': jax.ShapeDtypeStruct((b,), jnp.int32),
           **(batch_extras or {})}
  if init_state is not None:
    batch['index'] = jax.ShapeDtypeStruct((b,), jnp.int32)
  def call(logits, labels, mask, step_frac, batch, step):
    kw = loss_step_kwargs(bound, step, 100)
    if init_state is not None:
      kw['loss_state'] = init_state(num_examples=b, num_classes=c, **p.hparams)
    return bound(logits=logits, labels=labels, mask=mask, step_frac=step_frac, batch=batch, **kw)

  sig = 'loss(*, logits, labels, mask, step_frac, batch=None, **hparams)'
  try:
    out = jax.eval_shape(call, f32(b, c), f32(b, c), f32(b), f32(), batch,
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


def with_loss_state(examples: dict, loss_spec) -> tuple[dict, Callable[[], dict]]:
  """For a stateful loss (one whose function has `init_state`, e.g. elr): the examples with a
  dense 'index' [N] and a maker of `TrainState.extra` holding the loss state; else unchanged."""
  name, hparams = registry.split_spec(loss_spec)
  init_state = getattr(registry.get('losses', name), 'init_state', None)
  if init_state is None:
    return examples, dict
  n = pipeline.num_rows(examples)
  num_classes = pipeline.sample_rows(examples)['label'].shape[-1]
  examples = pipeline.with_row_index(examples)  # a RowSource gets its row positions per batch
  return examples, lambda: {'loss': init_state(num_examples=n, num_classes=num_classes, **hparams)}


def _make_tx(opts, steps, module=None, sample=None):
  """(optimizer, schedule); a module with `trainable_mask` (LoRA: adapters and head) gets the
  optimizer on its trainable leaves only and `optax.set_to_zero` on the rest (no moments kept);
  `param_dtype='bfloat16'` wraps it in float32 master weights (of the trainable leaves)."""
  opts = options.TrainOptions.coerce(opts)
  tx, schedule = optim.make_optimizer(opts.optimizer, opts.schedule, steps)
  mask = _trainable_mask(module, sample)
  if mask is not None:
    labels = jax.tree.map(lambda t: 'train' if t else 'freeze', mask)
    tx = optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()}, labels)
  if opts.param_dtype != 'float32':
    tx = optim.with_master_weights(tx, mask)
  return tx, schedule


def _trainable_mask(module, sample):
  mask_fn = getattr(module, 'trainable_mask', None)
  if mask_fn is None or sample is None:
    return None
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(0)}
  return mask_fn(jax.eval_shape(lambda: module.init(rngs, sample, train=False)['params']))


def run_loop(state, batches: Callable[[int], Any], *, step_fn, cfg, steps: int, ckpt, workdir: str,
             name: str, examples_per_step: int | None = None, evaluator: Callable | None = None):
  """Steps `state` from its step to `steps` over `batches(start)` (global batches), with metrics,
  the NaN guard, held-out evaluation and selection (`evaluator(params) -> {'val_loss', ...}`
  every `cfg.eval_every` steps), early stopping, and periodic and preemption checkpoints.
  Metrics may have a leading member axis (ensembles): they are logged as their mean."""
  start = int(state.step if np.ndim(state.step) == 0 else np.asarray(state.step).ravel()[0])
  last = {}
  if start >= steps or selection.stopped(state, cfg.patience):  # finished earlier: its last log
    done = [r for r in metrics.read_records(workdir) if 'loss' in r and r['step'] <= start]
    return state, ({k: v for k, v in done[-1].items() if k != 'step'} if done else last)
  writer = metrics.Writer(workdir)
  progress = metrics.Progress(name, steps, unit='ex', start=start)
  per_step = examples_per_step or cfg.batch_size
  it = iter(batches(start))
  t0 = time.perf_counter()
  try:
    for step in range(start + 1, steps + 1):
      state, m = step_fn(state, next(it))
      preempted = ckpt.preempted(step)
      due_eval = evaluator is not None and cfg.eval_every and (step % cfg.eval_every == 0
                                                               or step == steps)
      due_log = step % cfg.log_every == 0 or step == steps
      stop = False
      if due_eval:
        val = evaluator(state.params)
        state, stop = selection.update(state, val['val_loss'], step, cfg.patience)
        writer.write(step, {k: float(np.mean(v)) for k, v in val.items()})
      due_save = step % cfg.checkpoint_every == 0 or step == steps or preempted or stop
      if due_log or due_save:
        last = {k: float(np.mean(v)) for k, v in jax.device_get(m).items()}
        metrics.check_finite(last, step, min(cfg.log_every, cfg.checkpoint_every))
      if due_log:
        rate = progress.update(step, per_step, f'loss {last["loss"]:.4f}')
        writer.write(step, {**last, 'examples_per_sec': rate})
      if due_save:
        ckpt.save(step, state, {'step': step, 'name': name, 'seconds': time.perf_counter() - t0},
                  force=True)
      if stop:
        print(f'[{name}] early stop at step {step}/{steps}: no held-out improvement in '
              f'{cfg.patience} evaluations', flush=True)
        break
      if preempted and step < steps:
        raise checkpoint.Preempted(f'{name}: {preemption.signal_name()} at step {step}/{steps}; '
                                   f'checkpoint saved in {workdir}; rerun the same command to '
                                   'resume')
  finally:
    writer.close()
  if jax.process_index() == 0:
    plots.plot_curves(workdir, title=name)
  return state, last


# columns of a held-out slice that a loss reads besides the logits (ensemble votes, LLP bags)
LOSS_COLUMNS = ('label', 'member_probs', 'bag_id', 'bag_size')


def make_evaluator(module, val_examples: dict | None, opts, *, mesh, name: str,
                   batch_size: int, apply_fn: Callable | None = None) -> Callable | None:
  """`evaluator(params) -> {'val_loss', 'val_accuracy'}` on `val_examples` (soft 'label' [N, C],
  the held-out slice's own labels), or None without a slice or evaluations.

  `val_loss` is the stage's own training loss on the slice as at the end of training
  (step_frac = 1, so logconf's full auxiliary weight), with the slice's batch statistics (the
  whole slice is one batch: a proportion loss sees every val bag whole); a
  stateful loss (per-example state that val examples lack) is scored by cross-entropy instead.
  `val_accuracy` is agreement with the labels' argmax. Logits with a member axis ([N, K, C],
  ensembles) give per-member values [K]."""
  if val_examples is None or not opts.eval_every:
    return None
  if not len(val_examples['id']):
    raise UserError(f'{name}: eval_every={opts.eval_every} but the held-out slice is empty; '
                    'give the splits a val_fraction > 0 (or set eval_every=0)')
  order = {int(i): r for r, i in enumerate(val_examples['id'])}
  score = jax.jit(_held_out_loss(opts))

  def evaluator(params):
    pred = predict(module, params, val_examples, batch_size=batch_size, mesh=mesh,
                   name=f'{name} val', apply_fn=apply_fn, progress=False)
    rows = np.array([order[int(i)] for i in pred['id']])
    batch = {k: np.asarray(v)[rows] for k, v in val_examples.items() if k in LOSS_COLUMNS}
    batch['mask'] = np.ones(len(rows), np.float32)
    logits = pred['logits']
    if logits.ndim == 3:                                     # [N, K, C]: one score per member
      loss = jax.vmap(score, in_axes=(1, None))(logits, batch)
    else:
      loss = score(logits, batch)
    target = batch['label'].argmax(-1)
    acc = (logits.argmax(-1) == (target[:, None] if logits.ndim == 3 else target)).mean(0)
    return {'val_loss': np.asarray(loss), 'val_accuracy': np.asarray(acc)}
  return evaluator


def _held_out_loss(opts) -> Callable:
  """(logits [N, C], batch) -> the mean of the stage's loss on a held-out slice."""
  fn = opts.loss.entry()
  if getattr(fn, 'init_state', None) is not None:
    fn, hparams = registry.get('losses', 'xent'), {}
  else:
    hparams = opts.loss.hparams
  bound = functools.partial(fn, **hparams)

  def score(logits, batch):
    kw = loss_step_kwargs(bound, 1, 1)  # the end of training: step = total_steps
    per_ex, _ = bound(logits=logits, labels=batch['label'], mask=batch['mask'], step_frac=1.0,
                      batch=batch, **kw)
    return jnp.mean(per_ex)
  return score


def predict(module, params, examples: dict, *, batch_size: int, mesh, name: str = 'predict',
            apply_fn: Callable | None = None, progress: bool = True) -> dict:
  """{'id' [N], 'logits' [N, ...]} for every example exactly once, in the examples' order.

  `apply_fn(params, batch, *, train, rng)` defaults to the linen module's apply. Stops with
  `Preempted` between batches after SIGTERM/SIGINT (nothing of a prediction is kept)."""
  sharding.check_batch_size(batch_size, mesh, 'eval_batch_size')
  repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  # parameters stay where they are (replicated, or sharded by the stage's partition rules)
  param_sh = jax.tree.map(lambda x: x.sharding if isinstance(x, jax.Array) else repl, params)
  step = _jitted_eval_step(module, apply_fn, param_sh, data)
  n = len(examples['id'])
  total = -(-n // batch_size)
  bar = metrics.Progress(name, total, unit='ex', min_interval_s=5.0) if progress else None
  ids, logits = [], []
  for i, batch in enumerate(pipeline.eval_batches(examples, global_batch=batch_size,
                                                  process_index=jax.process_index(),
                                                  process_count=jax.process_count()), 1):
    preemption.check(name, 'the stages finished before it are saved')
    g = sharding.host_batch_to_global(batch, mesh)
    out = sharding.to_host({'id': g['id'], 'mask': g['mask'], 'logits': step(params, g)})
    keep = out['mask'] > 0
    ids.append(out['id'][keep])
    logits.append(out['logits'][keep])
    if bar is not None and (i == total or i % 20 == 0):
      bar.update(i, batch_size)
  return {'id': np.concatenate(ids), 'logits': np.concatenate(logits).astype(np.float32)}


# One jitted eval step per (module, apply_fn, shardings), most recent last: every held-out
# evaluation of a stage and every prediction with the same module (the strong head of the ceiling,
# the students and every seed) reuse one jit and its compiled shapes; a fresh `jax.jit` per call
# traced and compiled again at every evaluation (benchmarks/compile_count.py). Keyed by identity
# (a module's fields need not be hashable); an entry holds its module and apply_fn, so their ids
# are not reused while it lives.
_EVAL_STEPS: collections.OrderedDict = collections.OrderedDict()
EVAL_STEPS_KEPT = 16


def _jitted_eval_step(module, apply_fn: Callable | None, param_sh, data) -> Callable:
  leaves, treedef = jax.tree.flatten(param_sh)
  key = (id(module), id(apply_fn), treedef, tuple(leaves), data)
  entry = _EVAL_STEPS.get(key)
  if entry is not None and entry[0] is module and entry[1] is apply_fn:
    _EVAL_STEPS.move_to_end(key)
    return entry[2]
  step = jax.jit(functools.partial(eval_step, apply_fn=apply_fn or linen_apply_fn(module)),
                 in_shardings=(param_sh, data), out_shardings=data)
  _EVAL_STEPS[key] = (module, apply_fn, step)
  while len(_EVAL_STEPS) > EVAL_STEPS_KEPT:
    _EVAL_STEPS.popitem(last=False)
  return step


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs the experiment `config` describes in `workdir`; what `python -m w2s.main` calls.

  Dispatches to the protocol plug-in `config.protocol.name` (supervised, weak_to_strong, ...) and
  writes what it returns to `<workdir>/results.json` with the run's provenance (the full config,
  package versions, git commit, devices, wall time), and the config and numbers as TensorBoard
  hparams in `<workdir>/hparams/`; a failing run writes nothing there.
  """
  from w2s import provenance
  t0 = time.time()
  checkpoint.check_writable(workdir)
  proto = options.plugin('protocols', config.protocol, 'protocol')
  results = options.build(proto, 'protocol', config=config, workdir=workdir)
  results = {**results, 'provenance': provenance.record(config, wall_s=time.time() - t0)}
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, 'results.json'), results)
    metrics.write_hparams(workdir, results)  # TensorBoard's HParams view: config vs results
  return results


def _json_safe(x):
  """NaN / inf -> None (JSON has no NaN; the results say why a value is undefined)."""
  if isinstance(x, float) and not np.isfinite(x):
    return None
  if isinstance(x, (np.floating, np.integer)):
    return _json_safe(x.item())
  if isinstance(x, np.ndarray):
    return _json_safe(x.tolist())
  if isinstance(x, dict):
    return {str(k): _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  return x


def write_json_atomic(path: str, obj) -> None:
  """Writes JSON to `path` via a temp file + rename, so a crash never leaves half a file."""
  tmp = f'{path}.tmp.{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      json.dump(_json_safe(obj), f, indent=2, default=str, allow_nan=False)
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise UserError(f'cannot write {path} ({e.strerror}); free disk space or choose another '
                    '--workdir; the previous file is unchanged') from e
