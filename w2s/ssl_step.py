"""The online semi-supervised train step: a labelled batch and an unlabelled batch per update.

`train.fit` runs it (same loop, checkpoints, resume, sharding and metrics as the supervised step)
when the stage's `train.ssl` names an algorithm of `w2s.ssl` (FixMatch, Mean Teacher, UDA, ...):

    train=dict(..., batch_size=B, ssl=dict(name='fixmatch', tau=0.95), unlabelled_ratio=7,
               weak_augment=dict(name='translate', pad=2),
               strong_augment=dict(name='randaugment', num_ops=2), ema_decay=0.999)

Each step draws a labelled global batch of B rows (weak view a(x_l)) and an unlabelled one of
mu * B rows, both seeded pure functions of the step (a resumed run sees the same batches), makes
the weak and strong views a(x_u), A(x_u) on device with the rng folded from the step, runs the
student on all three, and lets the algorithm turn the logits into one loss. Per-algorithm state
(FlexMatch's per-example classes, FreeMatch's EMAs) and the EMA teacher (Mean Teacher; FixMatch's
EMA for evaluation) live in `TrainState.extra` ('ssl', 'ema'), so checkpoints carry them and a
resumed run continues them exactly. An algorithm that compares embeddings (SimMatch; the module
sets PROJECTION = D) gets a projection head on the model's pooled features (`w2s.ssl_heads`,
params under 'ssl_projection'), the embeddings of the three views from the same passes as their
logits (the model itself, as `train.ssl` allows no train.augment), and the rows of L the labelled
batch holds ('index_x'). Algorithms that act on inputs (MixMatch's MixUp, VAT's adversarial
shift; the module sets INPUT_LEVEL) get the student and the views themselves: see
`_input_level_loss` and `w2s.ssl`. The hidden labels of U are never given to the algorithm;
the step only logs the accuracy of the weak-view pseudo-labels against them ('pseudo_acc'),
counting only rows whose label is known: rows of a dataset's own unlabelled split (label -1,
e.g. STL-10's 100k images) are excluded, and 'pseudo_known' logs the share of the unlabelled
batch that 'pseudo_acc' is over (0 when none has a label; 'pseudo_acc' is then 0 and meaningless).
"""
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from w2s import options, sharding
from w2s.data import pipeline
from w2s.errors import UserError

INPUTS_SKIP = ('id', 'label', 'mask', 'index', 'hidden_label')


def algorithm(opts):
  """The algorithm's module of `opts.ssl` (kind 'ssl')."""
  import sys
  return sys.modules[opts.ssl.entry().__module__]


def uses_ema(opts) -> bool:
  return getattr(algorithm(opts), 'NEEDS_TEACHER', False) or opts.ema_decay > 0


def ema_decay(opts) -> float:
  return opts.ema_decay or getattr(algorithm(opts), 'EMA_DECAY', 0.999)


def check(opts, mesh, num_unlabelled: int, examples: dict | None = None) -> None:
  """UserError unless the options suit the ssl step and U holds one unlabelled batch; with
  `examples` (U as the model sees it), also unless an INPUT_LEVEL algorithm (MixMatch, VAT, ...)
  gets float inputs (the step checks that too, when it is traced, before the first update)."""
  if opts.augment is not None:
    raise UserError('train.augment is for supervised steps; with train.ssl use weak_augment '
                    '(labelled batch and a(x_u)) and strong_augment (A(x_u))')
  # mu * B splits over the devices whenever B does (fit checks B), so only the size is checked
  del mesh
  m = opts.batch_size * opts.unlabelled_ratio
  if num_unlabelled < m:
    raise UserError(f'the unlabelled split has {num_unlabelled} rows, fewer than one unlabelled '
                    f'batch of {m}; lower batch_size or unlabelled_ratio')
  mod = algorithm(opts)
  if examples is not None and getattr(mod, 'INPUT_LEVEL', False):
    from w2s.ssl import mixup
    mixup.float_inputs(_inputs(pipeline.sample_rows(examples)), opts.ssl.name)
  if opts.accum_steps != 1:
    raise UserError('train.accum_steps > 1 is not supported with train.ssl yet; use 1')


def projection(opts) -> int:
  """The width D of the algorithm's projection head (its PROJECTION), 0 for none."""
  return int(getattr(algorithm(opts), 'PROJECTION', 0))


def check_module(opts, module) -> None:
  """UserError unless `module` suits the algorithm (pooled features for a projection head)."""
  if projection(opts):
    from w2s import ssl_heads
    ssl_heads.check_module(module, opts.ssl.name)


def init_params(opts, module, params, sample: dict, rng):
  """`params`, plus the projection head's under 'ssl_projection' when the algorithm has one
  (its key: rng folded with 1; inside init jit)."""
  if not projection(opts):
    return params
  from w2s import ssl_heads
  return ssl_heads.init_params(module, params, sample, jax.random.fold_in(rng, 1),
                               projection(opts))


def init_extra(opts, params, num_classes: int, num_unlabelled: int, *,
               num_labelled: int | None = None, rng=None) -> dict:
  """{'ssl': algorithm state, 'ema': teacher params} as the algorithm needs (inside init jit).
  An algorithm with a projection head also gets `num_labelled` (its bank's rows) and a key (rng
  folded with 2) in `init_state`."""
  mod, extra = algorithm(opts), {}
  if hasattr(mod, 'init_state'):
    more = {}
    if projection(opts):
      more = dict(num_labelled=num_labelled, rng=jax.random.fold_in(rng, 2))
    extra['ssl'] = mod.init_state(num_classes=num_classes, num_unlabelled=num_unlabelled,
                                  **more, **opts.ssl.hparams)
  if uses_ema(opts):
    extra['ema'] = jax.tree.map(jnp.array, params)
  return extra


def _views(make: Callable | None, rng, batch):
  return batch if make is None else make(rng, batch)


def _inputs(batch: dict) -> dict:
  return {k: v for k, v in batch.items() if k not in INPUTS_SKIP}


def _input_level_loss(loss_fn, apply_fn, state, x, u, xw, keys, weak, strong, total_steps):
  """`loss_of(params)` of an INPUT_LEVEL algorithm: it gets the student as `apply(inputs, key)`
  (train mode; key None: eval mode) and the views of U as `u_view(kind, k)`: k = 0 is the view
  the logit-level algorithms see (same key), k > 0 folds k into that key."""
  r_uw, r_us, r_d = keys

  def u_view(kind: str, k: int) -> dict:
    make, key = {'weak': (weak, r_uw), 'strong': (strong, r_us)}[kind]
    return _inputs(_views(make, key if k == 0 else jax.random.fold_in(key, k), u))

  def loss_of(params):
    def apply(inputs, key):
      return apply_fn(params, inputs, train=key is not None, rng=key)
    loss, aux, new_state, logits_x, logits_uw = loss_fn(
        apply=apply, x=_inputs(xw), labels_x=x['label'], mask_x=x['mask'], u_view=u_view,
        mask_u=u['mask'], rng=r_d, step=state.step, total_steps=total_steps,
        state=state.extra.get('ssl'), index_u=u['index'])
    return loss, (aux, new_state, logits_x, logits_uw)
  return loss_of


def train_step(state, batch: dict, *, apply_fn: Callable, loss_fn: Callable, needs_teacher: bool,
               ema: float, needs_labelled_strong: bool = False, input_level: bool = False,
               tx: optax.GradientTransformation, schedule: Callable, total_steps: int,
               weak: Callable | None, strong: Callable | None, embed_fn: Callable | None = None):
  """One update on {'x': labelled batch [B], 'u': unlabelled batch [mu B]} (global arrays).
  embed_fn(params, inputs, *, train, rng) -> (logits, embedding): given (PROJECTION), it runs the
  three views and the algorithm also gets feats_x, feats_uw, feats_us and index_x."""
  rng = jax.random.fold_in(state.rng, state.step)
  r_xw, r_uw, r_us, r_d = jax.random.split(rng, 4)
  x, u = batch['x'], batch['u']
  xw = _views(weak, r_xw, x)
  if input_level:  # MixMatch, ReMixMatch, VAT: the algorithm runs the student itself
    loss_of = _input_level_loss(loss_fn, apply_fn, state, x, u, xw, (r_uw, r_us, r_d), weak,
                                strong, total_steps)
  else:
    uw, us = _views(weak, r_uw, u), _views(strong, r_us, u)

    def loss_of(params):
      d = jax.random.split(r_d, 3)
      more = {}
      if embed_fn is None:
        logits_x = apply_fn(params, _inputs(xw), train=True, rng=d[0])
        logits_uw = apply_fn(params, _inputs(uw), train=True, rng=d[1])
        logits_us = apply_fn(params, _inputs(us), train=True, rng=d[2])
      else:  # SimMatch: logits and embeddings of one pass per view, same keys as above
        logits_x, more['feats_x'] = embed_fn(params, _inputs(xw), train=True, rng=d[0])
        logits_uw, more['feats_uw'] = embed_fn(params, _inputs(uw), train=True, rng=d[1])
        logits_us, more['feats_us'] = embed_fn(params, _inputs(us), train=True, rng=d[2])
        more['index_x'] = x['index']
      if needs_labelled_strong:  # A(x_l) (DeFixMatch); its own keys, so no other stream moves
        xs = _views(strong, jax.random.fold_in(rng, 1), x)
        more['logits_xs'] = apply_fn(params, _inputs(xs), train=True,
                                     rng=jax.random.fold_in(d[0], 1))
      teacher = None
      if needs_teacher:
        teacher = apply_fn(jax.lax.stop_gradient(state.extra['ema']), _inputs(uw), train=False,
                           rng=None)
      loss, aux, new_state = loss_fn(
          logits_x=logits_x, labels_x=x['label'], mask_x=x['mask'], logits_uw=logits_uw,
          logits_us=logits_us, mask_u=u['mask'], step=state.step, total_steps=total_steps,
          state=state.extra.get('ssl'), index_u=u['index'], logits_ut=teacher, **more)
      return loss, (aux, new_state, logits_x, logits_uw)

  (loss, (aux, new_ssl, logits_x, logits_uw)), grads = jax.value_and_grad(
      loss_of, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  extra = dict(state.extra)
  if new_ssl is not None:
    extra['ssl'] = new_ssl
  if 'ema' in extra:  # teacher <- decay * teacher + (1 - decay) * student (optax's EMA update)
    extra['ema'] = optax.incremental_update(params, extra['ema'], step_size=1.0 - ema)
  mx, mu_ = x['mask'], u['mask']
  acc = jnp.sum((jnp.argmax(logits_x, -1) == jnp.argmax(x['label'], -1)) * mx) / jnp.maximum(
      mx.sum(), 1.0)
  known = mu_ * (u['hidden_label'] >= 0)  # real rows of U whose hidden label is known
  pseudo = jnp.sum((jnp.argmax(logits_uw, -1) == u['hidden_label']) * known) / jnp.maximum(
      known.sum(), 1.0)
  metrics = {'loss': loss, 'accuracy': acc, 'pseudo_acc': pseudo,
             'pseudo_known': known.sum() / jnp.maximum(mu_.sum(), 1.0),
             'grad_norm': optax.tree.norm(grads), 'learning_rate': schedule(state.step),
             **{k: jnp.asarray(v, jnp.float32) for k, v in aux.items()}}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       extra=extra), metrics


def make_step(opts, *, apply_fn, tx, schedule, total_steps: int, module=None):
  """`train_step` bound to the stage's algorithm, views and EMA (before jit); `module` (the flax
  model) is needed by an algorithm with a projection head."""
  mod = algorithm(opts)
  build = lambda p, where: None if p is None else options.build(p, where)
  more = {}
  if projection(opts):
    from w2s import ssl_heads
    more['embed_fn'] = ssl_heads.embed_fn(module, projection(opts))
  return functools.partial(
      train_step, apply_fn=apply_fn, loss_fn=functools.partial(mod.loss, **opts.ssl.hparams),
      needs_teacher=getattr(mod, 'NEEDS_TEACHER', False), ema=ema_decay(opts), tx=tx,
      needs_labelled_strong=getattr(mod, 'NEEDS_LABELLED_STRONG', False),
      input_level=getattr(mod, 'INPUT_LEVEL', False),
      schedule=schedule, total_steps=total_steps,
      weak=build(opts.weak_augment, 'train.weak_augment'),
      strong=build(opts.strong_augment, 'train.strong_augment'), **more)


def unlabelled_examples(unlabelled: dict) -> dict:
  """U for the step: its inputs, 'index' (row in U, for per-example state) and 'hidden_label'
  (int, for the logged pseudo-label accuracy only; -1 where unknown: an int -1 or an all-zero
  soft row, see `learners.soft_labels`); its soft 'label' is dropped."""
  out = {k: v for k, v in pipeline.with_row_index(unlabelled).items() if k != 'label'}
  y = np.asarray(unlabelled['label'])
  if y.ndim == 2:
    y = np.where(y.sum(-1) > 0, y.argmax(-1), -1)
  out['hidden_label'] = y.astype(np.int32)
  return out


def batches(labelled: dict, unlabelled: dict, opts, mesh, start: int, steps: int):
  """Global {'x', 'u'} batches for steps start..steps-1 (U drawn with seed + 1)."""
  def stream(examples, size, seed):
    return pipeline.train_batches(examples, global_batch=size, seed=seed, start_step=start,
                                  num_steps=steps - start, process_index=jax.process_index(),
                                  process_count=jax.process_count())
  pairs = zip(stream(labelled, opts.batch_size, opts.seed),
              stream(unlabelled, opts.batch_size * opts.unlabelled_ratio, opts.seed + 1))
  for x, u in pipeline.prefetch(pairs):
    yield {'x': sharding.host_batch_to_global(x, mesh),
           'u': sharding.host_batch_to_global(u, mesh)}
