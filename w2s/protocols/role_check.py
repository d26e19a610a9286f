"""What a run builds for one role, traced on the dataset's inputs before anything trains.

A protocol's `check` (what `--dry_run` runs, and the first thing every run does) calls `role` for
each trained role: the role's view and featurization run on one real row, then its model (for a
frozen backbone: the backbone's features and the head over them) and every augmentation of its
train section are traced on that row's shapes with `jax.eval_shape`, so no parameter is made and
nothing is computed or written. A digit vector fed to an image model or an image augmentation
then fails here, as one line naming the section, not when the step first compiles (for a
self-training student, after a round of training).
"""
from typing import Mapping

import jax
import numpy as np

from w2s import options
from w2s.errors import UserError
from w2s.protocols import learners

AUGMENT_KEYS = ('augment', 'weak_augment', 'strong_augment')


def _named(where: str, e: UserError) -> UserError:
  """`e` with `where` in front unless it already names it."""
  return e if str(e).startswith(where) else UserError(f'{where}: {e}')


def inputs(opts: learners.RoleOptions, dataset) -> dict[str, jax.ShapeDtypeStruct]:
  """[1, ...] shapes of the fields the role trains on: its first example through its view and
  featurization, or for a frozen backbone the backbone's features 'x' [1, D]."""
  fields = learners._inputs_fn(dataset, opts)(learners._first_rows(dataset, 1))
  spec = {k: jax.ShapeDtypeStruct((1,) + np.shape(v)[1:], np.asarray(v).dtype)
          for k, v in fields.items()}
  if not opts.frozen:
    return spec
  model = options.build(opts.model, f'{opts.role}.model', num_classes=dataset.num_classes)
  rngs = {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}

  def features(batch):
    variables = model.init(rngs, batch, train=False)
    return model.apply(variables, batch, method='features')
  feats = learners._abstract(features, f'{opts.role}.model features', spec)
  return {'x': jax.ShapeDtypeStruct(feats.shape, np.float32)}


def augmentations(train: options.TrainOptions, batch: Mapping[str, jax.ShapeDtypeStruct],
                  where: str) -> None:
  """Every augmentation of a train section (augment, weak_augment, strong_augment) built with
  its options and traced on `batch`; each must keep every field's shape and dtype."""
  for key in AUGMENT_KEYS:
    p = getattr(train, key)
    if p is None:
      continue
    at = f'{where}.{key}'
    try:
      fn = options.build(p, at)
      out = learners._abstract(lambda b, fn=fn: fn(jax.random.PRNGKey(0), b), at, dict(batch))
    except UserError as e:
      raise _named(at, e) from e
    for k, s in batch.items():
      o = out.get(k) if isinstance(out, Mapping) else None
      if o is None or (o.shape, o.dtype) != (s.shape, s.dtype):
        got = 'drops it' if o is None else f'makes it {o.dtype}{list(o.shape)}'
        raise UserError(f'{at} ({p.name!r}) must keep batch field {k!r} {s.dtype}'
                        f'{list(s.shape)}; it {got}')


def role(opts: learners.RoleOptions, train: options.TrainOptions, dataset) -> None:
  """The role's model and augmentations traced on the dataset's input shapes (see module doc)."""
  num_classes = dataset.num_classes
  try:
    spec = inputs(opts, dataset)
  except UserError as e:
    raise _named(opts.role, e) from e
  batch = {**spec, 'label': jax.ShapeDtypeStruct((1, num_classes), np.float32)}
  augmentations(train, batch, f'{opts.role}.train')  # the step augments before the model
  if opts.frozen:
    where, module = f'{opts.role}.head', options.build(opts.head, f'{opts.role}.head',
                                                      num_classes=num_classes)
  else:
    where, module = f'{opts.role}.model', options.build(opts.model, f'{opts.role}.model',
                                                       num_classes=num_classes)
  try:
    learners._trace(module, spec, num_classes, where)
  except UserError as e:
    raise _named(where, e) from e
