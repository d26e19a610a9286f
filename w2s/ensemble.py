"""K models trained together in one jitted step: `jax.vmap` over stacked params.

Weak ensembles (methods.md, "Weak ensembles"): K weak supervisors that differ by seed (init,
dropout and data order) and optionally by bootstrap bag (Breiman 1996, bagging). Member k with
seed s_k is exactly the model `train.fit` would train with `seed=s_k` on the same examples (or its
bag): the init, the RNG and the batch order are those of that separate run, only computed for all
K at once. For small models this fills the devices far better than K sequential runs. Labels are
the mean probability; the members' disagreement feeds the `reliability` loss.

Specialists (Liu & Alahi 2024, co-supervised learning; `ensemble=dict(size=K, specialists=...)`):
the examples carry a 'class_mask' column [N, K, C] (`learners.Learner.examples`); member k then
trains only on the rows whose label (argmax) is one of its classes, as bagging gives each member
its own rows, for the same number of steps (more epochs over fewer rows), and its logits are set to
NEG_LOGIT outside its classes after the model, in training and prediction alike, so its
probabilities there are exactly 0 (a finite value: a soft target's 0 * log p stays 0, not NaN).
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from w2s import checkpoint, options, selection, sharding, train
from w2s.data import pipeline
from w2s.errors import UserError


CLASS_MASK = 'class_mask'  # [N, K, C] (or a member's [N, C]): 1 where member k predicts class c
NEG_LOGIT = -1e30           # exp(NEG_LOGIT - max) == 0 in float32; finite, so 0 * log p == 0


def member_seeds(seed: int, size: int) -> list[int]:
  return [seed + 1000 * k for k in range(size)]


def bag(examples: dict, seed: int) -> dict:
  """A bootstrap resample of the rows (same size, with replacement), seeded."""
  n = len(examples['id'])
  rows = np.sort(np.random.default_rng([seed, 0xBA6]).integers(0, n, n))
  return {k: v[rows] for k, v in examples.items()}


def fit_ensemble(module, train_examples: dict, *, cfg, seeds: list[int], workdir: str, mesh,
                 bagging: bool = False, name: str = 'ensemble', fingerprint: dict | None = None,
                 val_examples: dict | None = None, eval_batch_size: int | None = None):
  """Trains len(seeds) members at once; returns (stacked state [K, ...], last metrics).

  Resume, fingerprint, held-out evaluation and selection work as in `train.fit`; with
  `select='best'` each member keeps its own best parameters (by its own held-out loss).

  `train_examples` may be a list of K example dicts, one per member, with the same ids and labels
  in the same order but each member's own inputs (e.g. frozen features of a text with member k's
  debate transcript appended); then `val_examples` (if any) holds every member's inputs stacked
  on axis 1 ([N, K, ...], `stack_members`), and so must the examples given to `predict_ensemble`
  with `per_member=True`."""
  opts = options.TrainOptions.coerce(cfg)
  if options.plain(opts.partition) != 'replicate' or opts.param_dtype != 'float32':
    raise UserError(f'{name}: an ensemble trains replicated float32 members in one vmapped step; '
                    'drop train.partition / train.param_dtype, or train one member (no ensemble)')
  if train.group_key(opts) is not None:
    raise UserError(f'{name}: an ensemble draws rows, not whole {train.group_key(opts)!r} groups '
                    f'(loss {opts.loss.name!r} or train.group_by); train one model (no ensemble)')
  k = len(seeds)
  per_member = isinstance(train_examples, (list, tuple))
  if per_member:
    inputs = _check_members(train_examples, k, bagging, name)
    members = [train.with_loss_state(m, opts.loss.spec())[0] for m in train_examples]
    train_examples, extra = train.with_loss_state(train_examples[0], opts.loss.spec())
  else:
    train_examples, extra = train.with_loss_state(train_examples, opts.loss.spec())
    members = [train_examples] * k
    if CLASS_MASK in train_examples:
      members = specialise(train_examples, k, name)
    members = [bag(m, s) if bagging else m for m, s in zip(members, seeds)]
  specialists = _class_masks(train_examples, k, name) if CLASS_MASK in train_examples else None
  sharding.check_batch_size(opts.batch_size, mesh)
  steps = train.total_steps(opts, len(train_examples['id']))
  loss_fn = functools.partial(opts.loss.entry(), **opts.loss.hparams)
  apply_fn = masked_apply_fn(train.train_apply_fn(module, opts))
  repl = sharding.replicated(mesh)
  batch_sharding = sharding.data_sharded(mesh, leading=1)  # [K, B, ...]: members x split batch
  sample = train._sample_rows(train_examples)
  sample['mask'] = np.ones(1, np.float32)
  tx, schedule = train._make_tx(opts, steps, module, sample)
  evaluator = train.make_evaluator(module, val_examples, opts, mesh=mesh, name=name,
                                   batch_size=eval_batch_size or opts.batch_size,
                                   apply_fn=members_apply_fn(module, per_member))

  # members share a pretrained backbone (host arrays, read once); their heads (random init,
  # unlike a single model's zero head) and adapters differ
  from w2s.models import hf_import
  pretrained = hf_import.pretrained_params(module)

  def init_one(rng, pretrained):
    p_rng, d_rng, s_rng = jax.random.split(rng, 3)
    params = module.init({'params': p_rng, 'dropout': d_rng}, sample, train=False)['params']
    if pretrained is not None:
      params = train.merge_params(params, pretrained)
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=tx.init(params), rng=s_rng,
                            extra={**extra(), **selection.init(opts, params)})

  init = jax.jit(jax.vmap(init_one, in_axes=(0, None)), out_shardings=repl)
  rngs = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  step_fn = jax.jit(jax.vmap(functools.partial(
      train.train_step, apply_fn=apply_fn, loss_fn=loss_fn, tx=tx, schedule=schedule,
      total_steps=steps, accum_steps=opts.accum_steps)),
      in_shardings=(repl, batch_sharding), out_shardings=(repl, repl), donate_argnums=0)

  def batches(start):
    its = [pipeline.train_batches(m, global_batch=opts.batch_size, seed=s, start_step=start,
                                  num_steps=steps - start, process_index=jax.process_index(),
                                  process_count=jax.process_count())
           for m, s in zip(members, seeds)]
    for per_member in pipeline.prefetch(zip(*its)):
      stacked = _stack_members(per_member)
      yield jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(batch_sharding, x), stacked)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                 every_steps=opts.checkpoint_every, keep=opts.keep_checkpoints)
  try:
    checkpoint.check_fingerprint(
        workdir, {**train.run_fingerprint(opts, train_examples, fingerprint),
                  'members': {'seeds': list(seeds), 'bagging': bagging,
                              **({'inputs': inputs} if per_member else {}),
                              **({'specialists': specialists.astype(int).tolist()}
                                 if specialists is not None else {})}},
        has_checkpoints=ckpt.latest_step() is not None)
    state, _ = ckpt.restore(jax.eval_shape(init, rngs, pretrained))
    if state is None:
      state = init(rngs, pretrained)
    state, last = train.run_loop(state, batches, step_fn=step_fn, cfg=opts, steps=steps,
                                 ckpt=ckpt, workdir=workdir, name=f'{name} x{k}',
                                 examples_per_step=k * opts.batch_size, evaluator=evaluator)
  finally:
    ckpt.close()
  return train.selected_with_val(state, opts, last, evaluator)


def _check_members(member_examples, k: int, bagging: bool, name: str) -> list[str]:
  """Per-member examples: K of them, the same ids and labels; -> a digest of each one's inputs."""
  import hashlib
  if len(member_examples) != k:
    raise UserError(f'{name}: {len(member_examples)} members\' examples for {k} seeds')
  if bagging:
    raise UserError(f'{name}: bagging draws rows of one set of inputs; per-member inputs already '
                    'differ: drop ensemble.bagging')
  if CLASS_MASK in member_examples[0]:
    raise UserError(f'{name}: specialists train on one set of inputs; per-member inputs are '
                    'not supported with ensemble.specialists')
  first = member_examples[0]
  digests = []
  for m in member_examples:
    if not (np.array_equal(m['id'], first['id']) and np.array_equal(m['label'], first['label'])):
      raise UserError(f'{name}: the members\' examples must share ids and labels, in one order')
    h = hashlib.sha256()
    for key in sorted(set(m) - {'id', 'label'}):
      h.update(key.encode() + np.ascontiguousarray(m[key]).tobytes())
    digests.append(h.hexdigest()[:16])
  return digests


def _class_masks(examples: dict, k: int, name: str) -> np.ndarray:
  """The specialists' class masks [K, C] of examples with a 'class_mask' column [N, K, C]."""
  col = np.asarray(examples[CLASS_MASK])
  if col.ndim != 3 or col.shape[1] != k or not (col == col[:1]).all():
    raise UserError(f'{name}: the examples\' {CLASS_MASK!r} must be one [K={k}, C] mask repeated '
                    'on every row (build examples with learners.Learner.examples)')
  return col[0] > 0


def specialise(examples: dict, k: int, name: str = 'ensemble') -> list[dict]:
  """K members' examples: member k's rows are those whose label argmax is one of its classes,
  its 'class_mask' column its own mask [n_k, C]."""
  masks = _class_masks(examples, k, name)
  cls = np.argmax(np.asarray(examples['label']), axis=-1)
  out = []
  for j, m in enumerate(masks):
    rows = np.flatnonzero(m[cls])
    if not len(rows):
      raise UserError(f'{name}: specialist {j} (classes {np.flatnonzero(m).tolist()}) has no '
                      'training row with one of its labels; change ensemble.specialists')
    member = {key: v[rows] for key, v in examples.items() if key != CLASS_MASK}
    member[CLASS_MASK] = np.broadcast_to(m.astype(np.float32), (len(rows), len(m))).copy()
    out.append(member)
  return out


def _mask_logits(logits, class_mask):
  return jnp.where(class_mask > 0, logits, NEG_LOGIT).astype(logits.dtype)


def masked_apply_fn(apply_fn):
  """`apply_fn` whose logits [B, C] are NEG_LOGIT outside batch['class_mask'] [B, C] (if any)."""
  def masked(params, batch, *, train, rng):
    logits = apply_fn(params, batch, train=train, rng=rng)
    return _mask_logits(logits, batch[CLASS_MASK]) if CLASS_MASK in batch else logits
  return masked


def stack_members(member_examples: list[dict]) -> dict:
  """K example dicts (same ids) -> one, each input stacked on axis 1 ([N, K, ...])."""
  first = member_examples[0]
  return {key: (first[key] if key in ('id', 'label') else
                np.stack([m[key] for m in member_examples], axis=1)) for key in first}


def _stack_members(batches: tuple) -> dict:
  """K host batches -> [K, B, ...]; text is padded to the longest member's length."""
  out = {}
  for key in batches[0]:
    arrs = [b[key] for b in batches]
    if arrs[0].ndim == 2 and key in ('input_ids', 'attention_mask', 'token_type_ids'):
      t = max(a.shape[1] for a in arrs)
      arrs = [np.pad(a, ((0, 0), (0, t - a.shape[1]))) for a in arrs]
    out[key] = np.stack(arrs)
  return out


def members_apply_fn(module, per_member: bool = False):
  """`apply_fn(stacked_params, batch, ...) -> [B, K, C]` (the batch axis stays first); with
  `per_member` the batch's inputs are [B, K, ...] and member k reads its own [:, k]."""
  one = train.linen_apply_fn(module)

  def member_apply(params, batch):
    if per_member:
      inputs = {k: v for k, v in batch.items() if k not in ('label', 'mask', 'id', CLASS_MASK)}
      return jax.vmap(lambda p, b: one(p, b, train=False, rng=None), in_axes=(0, 1))(params, inputs)
    return jax.vmap(lambda p, b: one(p, b, train=False, rng=None), in_axes=(0, None))(params, batch)

  def apply_fn(params, batch, *, train, rng):
    del train, rng
    logits = jnp.swapaxes(member_apply(params, batch), 0, 1)  # [B, K, C]
    return _mask_logits(logits, batch[CLASS_MASK]) if CLASS_MASK in batch else logits
  return apply_fn


def predict_ensemble(module, stacked_params, examples: dict, *, batch_size: int, mesh,
                     name: str = 'ensemble predict', per_member: bool = False) -> dict:
  """{'id' [N], 'member_logits' [N, K, C]} for every example exactly once (`per_member`: the
  examples' inputs are [N, K, ...], `stack_members`)."""
  pred = train.predict(module, stacked_params, examples, batch_size=batch_size, mesh=mesh,
                       name=name, apply_fn=members_apply_fn(module, per_member))
  return {'id': pred['id'], 'member_logits': pred['logits']}
