"""The fit loop and `train_and_evaluate`: `fit` runs the pure steps of `w2s.steps` with
data-parallel (or FSDP / TP) sharding, checkpoints, metrics, held-out selection and resume;
protocols (w2s/protocols/) chain `fit` and `predict` (`w2s.predict`) into stages.

The steps and prediction are re-exported here (`train.train_step`, `train.predict`, ...) so the
notebooks and protocols keep one import.
"""
import functools
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from w2s import (checkpoint, memory, metrics, optim, options, partition, plots, preemption,
                 registry, selection, sharding)
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.predict import LOSS_COLUMNS, make_evaluator, predict  # noqa: F401  (re-exported)
from w2s.steps import (TrainState, _microbatches, check_loss, eval_step,  # noqa: F401
                       linen_apply_fn, loss_step_kwargs, train_apply_fn, train_step)


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
        eval_batch_size: int | None = None, unlabelled: dict | None = None,
        apply_fn: Callable | None = None, init_batch: dict | None = None
        ) -> tuple[TrainState, dict]:
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

  Token-level stages (SFT, DPO, reward models; a loss with an `inputs` attribute) pass
  `apply_fn(params, batch, *, train, rng)` (e.g. `w2s.models.sequence.lm_apply_fn(module)`: logits
  [B, T, V]) and `init_batch`, the inputs `module.init` takes when the training rows have
  another shape ([N, 2, T] pairs); held-out evaluation then scores the loss itself.
  """
  opts = options.TrainOptions.coerce(cfg)
  semi = opts.ssl is not None
  if semi:
    from w2s import ssl_step
    if unlabelled is None:
      raise UserError(f'{name}: train.ssl={opts.ssl.name!r} needs unlabelled examples; use a '
                      'protocol that has them (ssl) or drop train.ssl')
    ssl_step.check(opts, mesh, pipeline.num_rows(unlabelled), examples=unlabelled)
    ssl_step.check_module(opts, module)
    if ssl_step.projection(opts):  # SimMatch's bank: one slot per labelled row
      train_examples = pipeline.with_row_index(train_examples)
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
  if apply_fn is not None and (opts.augment is not None or semi):
    raise UserError(f'{name}: train.augment and train.ssl work on classification inputs; drop '
                    'them for a token-level stage')
  eval_apply = apply_fn
  apply_fn = apply_fn or train_apply_fn(module, opts)
  repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  sample = _sample_rows(train_examples) if init_batch is None else dict(init_batch)
  sample['mask'] = np.ones(1, np.float32)
  tx, schedule = _make_tx(opts, steps, module, sample)
  evaluator = make_evaluator(module, val_examples, opts, mesh=mesh, name=name,
                             batch_size=eval_batch_size or opts.batch_size, apply_fn=eval_apply)

  def init_fn(rng, pretrained):
    p_rng, d_rng, s_rng = jax.random.split(rng, 3)
    params = module.init({'params': p_rng, 'dropout': d_rng}, sample, train=False)['params']
    if semi:  # a projection head (SimMatch) joins the tree; others: unchanged
      params = ssl_step.init_params(opts, module, params, sample, p_rng)
    if pretrained is not None:
      params = merge_params(params, pretrained)
    if opts.param_dtype != 'float32':
      params = optim.cast_params(params, opts.param_dtype)
    more = {}
    if semi:
      more = ssl_step.init_extra(opts, params, np.shape(sample['label'])[-1],
                                 pipeline.num_rows(unlabelled),
                                 num_labelled=pipeline.num_rows(train_examples), rng=p_rng)
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
                                total_steps=steps, module=module)
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
        state, stop = selection.update(state, val, step, cfg.patience)
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
