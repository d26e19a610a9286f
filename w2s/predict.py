"""Prediction and held-out evaluation: `predict` runs a trained model over examples once each
(sharded, preemptible), `make_evaluator` scores the held-out slice during training for selection
and early stopping. Built on the pure `eval_step` of `w2s.steps`.
"""
import collections
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from w2s import metrics, preemption, registry, selection, sharding
from w2s.data import pipeline
from w2s.errors import UserError
from w2s.steps import eval_step, linen_apply_fn, loss_step_kwargs


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
  `val_accuracy` is agreement with the labels' argmax. With `opts.select_metric == 'auroc'` it
  also gives `val_auroc`, the AUROC of the labels' argmax (`selection.auroc`). Logits with a
  member axis ([N, K, C], ensembles) give per-member values [K]."""
  if val_examples is None or not opts.eval_every:
    return None
  if not len(val_examples['id']):
    raise UserError(f'{name}: eval_every={opts.eval_every} but the held-out slice is empty; '
                    'give the splits a val_fraction > 0 (or set eval_every=0)')
  with_auroc = selection.metric(opts) == 'auroc'
  if getattr(opts.loss.entry(), 'inputs', None) is not None:
    if with_auroc:
      raise UserError(f'{name}: select_metric="auroc" scores classification logits; loss '
                      f'{opts.loss.name!r} is token-level: select on the loss')
    return _token_evaluator(module, val_examples, opts, mesh=mesh, name=name,
                            batch_size=batch_size, apply_fn=apply_fn)
  order = {int(i): r for r, i in enumerate(val_examples['id'])}
  score = _jitted_score(opts)

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
    out = {'val_loss': np.asarray(loss), 'val_accuracy': np.asarray(acc)}
    if with_auroc:
      out['val_auroc'] = selection.auroc(batch['label'], logits)
    return out
  return evaluator


def _token_evaluator(module, val_examples: dict, opts, *, mesh, name: str, batch_size: int,
                     apply_fn: Callable | None) -> Callable:
  """The held-out evaluator of a token-level stage (SFT, DPO): its loss and its 'correct' (token
  or pair accuracy) averaged over the slice's sequences, batch by batch (logits [B, T, V] are
  never gathered); the loss's batch statistics are then per batch."""
  if apply_fn is None:
    raise UserError(f'{name}: loss {opts.loss.name!r} is token-level; fit needs the apply_fn of '
                    'its model (w2s.models.sequence.lm_apply_fn)')
  sharding.check_batch_size(batch_size, mesh, 'eval_batch_size')
  bound = functools.partial(opts.loss.entry(), **opts.loss.hparams)
  kw = loss_step_kwargs(bound, 1, 1)

  def sums(params, batch):
    logits = apply_fn(params, batch, train=False, rng=None)
    per_ex, aux = bound(logits=logits, labels=batch['label'], mask=batch['mask'], step_frac=1.0,
                        batch=batch, **kw)
    mask = batch['mask']
    correct = aux.get('correct', jnp.zeros_like(mask))
    return jnp.stack([jnp.sum(per_ex * mask), jnp.sum(correct * mask), jnp.sum(mask)])
  step = jax.jit(sums)

  def evaluator(params):
    total = np.zeros(3)
    for batch in pipeline.eval_batches(val_examples, global_batch=batch_size,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count()):
      total += np.asarray(jax.device_get(step(params, sharding.host_batch_to_global(batch, mesh))))
    n = max(total[2], 1.0)
    return {'val_loss': np.asarray(total[0] / n), 'val_accuracy': np.asarray(total[1] / n)}
  return evaluator


# One jitted held-out score per (loss function, hparams): every stage and seed with the same loss
# reuses one jit and its compiled shapes instead of tracing and lowering it again per `fit`.
_SCORES: dict = {}


def _jitted_score(opts) -> Callable:
  fn, hparams = opts.loss.entry(), opts.loss.hparams
  try:
    key = (fn, tuple(sorted((k, type(v), v) for k, v in hparams.items())))
    hash(key)
  except TypeError:  # an unhashable hparam (a list): a jit of its own, as before
    return jax.jit(_held_out_loss(opts))
  if key not in _SCORES:
    _SCORES[key] = jax.jit(_held_out_loss(opts))
  return _SCORES[key]


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
