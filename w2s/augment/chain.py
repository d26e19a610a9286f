"""Several augmentations in order (FixMatch's weak view a(x), Sohn et al. 2020):

    dict(name='chain', ops=[dict(name='flip'), dict(name='translate', pad=4)])


Each section is built like any plug-in (its hparams checked against its `make`); op i gets the
i-th key of `jax.random.split(rng, len(ops))`, so adding an op at the end leaves the draws of the
earlier ones unchanged.
"""
from typing import Callable, Sequence

import jax

from w2s import options
from w2s.errors import UserError


def make(*, ops: Sequence) -> Callable[[jax.Array, dict], dict]:
  """fn(rng, batch) applying the augmentations of the `ops` sections one after the other."""
  ops = options.plain(ops)
  if not isinstance(ops, list) or not ops:
    raise UserError("augment 'chain': ops must be a non-empty list of sections "
                    "[dict(name='flip'), dict(name='translate', pad=4), ...]")
  fns = []
  for i, spec in enumerate(ops):
    plugin = options.plugin('augment', spec, f'augment chain ops[{i}]')
    fns.append(options.build(plugin, f'augment chain ops[{i}]'))

  def fn(rng: jax.Array, batch: dict) -> dict:
    for key, f in zip(jax.random.split(rng, len(fns)), fns):
      batch = f(key, batch)
    return batch
  return fn
