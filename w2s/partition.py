"""Partition rules: where each parameter (and its optimizer state) lives on the mesh.

A stage's `train.partition` says how its state is laid out over the mesh's 'fsdp' and 'tensor'
axes (`w2s.sharding.make_mesh`):

* `'replicate'` (default): every device holds everything; plain data parallelism.
* `'fsdp'`: zero-config fully sharded data parallelism (ZeRO-3 style, big_vision's default rule):
  each tensor of at least `min_bytes` is split along its largest dimension that the 'fsdp' axis
  divides; smaller ones are replicated.
* `'tp'` / `'fsdp+tp'`: the model family's tensor-parallel rules (`module.partition_rules`, when
  it has them), then FSDP on a remaining dimension.
* a list of `(regex, spec)` pairs: the first regex that `re.search`es the '/'-joined path wins;
  `spec` is a tuple of axis names / None per dimension, or the string 'fsdp' for the automatic
  rule. A large tensor no rule matches is an error (add a `('.*', 'fsdp')` or `('.*', ())` rule).

Matching is on paths such as `params/backbone/layer_0/attention/query/kernel`, so the same rules
cover the optimizer state's mirrors (`opt_state/0/mu/backbone/...`) and any copy in `extra`.
Scalars are always replicated. Layout never changes a result (up to float rounding): a sharded
step equals the single-device step, and a checkpoint restores onto any other layout.
"""
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from w2s.errors import UserError
from w2s.plain_data import plain

NAMED = ('replicate', 'fsdp', 'tp', 'fsdp+tp')
MIN_BYTES = 1 << 20  # tensors below 1 MiB stay replicated under the automatic FSDP rule


def path_str(path) -> str:
  """'/'-joined names of a jax.tree_util key path."""
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return '/'.join(parts)


def _fsdp_spec(shape, mesh, taken: Sequence[Any] | None = None, min_bytes: int = MIN_BYTES,
               itemsize: int = 4) -> tuple:
  """[None, ..., 'fsdp', ...] on the largest dimension 'fsdp' divides (and no rule took)."""
  spec = list(taken) if taken is not None else [None] * len(shape)
  n = mesh.shape.get('fsdp', 1)
  if n == 1 or int(np.prod(shape)) * itemsize < min_bytes:
    return tuple(spec)
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if spec[d] is None and shape[d] % n == 0:
      spec[d] = 'fsdp'
      break
  return tuple(spec)


def _parse(rules) -> tuple[str, list, int]:
  """(kind, explicit rules, min_bytes) from the config value."""
  min_bytes = MIN_BYTES
  if isinstance(rules, dict):
    unknown = sorted(set(rules) - {'rules', 'min_bytes'})
    if unknown:
      raise UserError(f'partition has unknown key {unknown[0]!r}; use dict(rules=..., min_bytes=...)')
    min_bytes = int(rules.get('min_bytes', MIN_BYTES))
    rules = rules.get('rules', 'replicate')
  if isinstance(rules, str):
    if rules not in NAMED:
      raise UserError(f'partition={rules!r}; use one of {", ".join(NAMED)} or a list of '
                      '(regex, spec) rules')
    return rules, [], min_bytes
  out = []
  for rule in rules or ():
    if not (isinstance(rule, (list, tuple)) and len(rule) == 2 and isinstance(rule[0], str)):
      raise UserError(f'partition rule {rule!r} must be (regex, spec)')
    try:
      pattern = re.compile(rule[0])
    except re.error as e:
      raise UserError(f'partition rule regex {rule[0]!r} is invalid: {e}') from e
    spec = rule[1]
    if not (spec == 'fsdp' or isinstance(spec, (list, tuple))):
      raise UserError(f'partition rule {rule[0]!r}: spec {spec!r} must be a tuple of axis names '
                      "/ None, or 'fsdp'")
    out.append((pattern, spec))
  return 'rules', out, min_bytes


def check(rules, where: str = 'partition') -> None:
  """UserError (naming `where`) unless `rules` is a valid partition value."""
  try:
    _parse(plain(rules))
  except UserError as e:
    raise UserError(f'{where}: {e}') from e


def specs(tree, mesh, rules='replicate', family_rules: Sequence | None = None):
  """A PartitionSpec for every leaf of `tree` (arrays or ShapeDtypeStructs), by `rules`."""
  kind, explicit, min_bytes = _parse(plain(rules))
  if kind in ('tp', 'fsdp+tp'):
    if not family_rules:
      raise UserError(f'partition={kind!r} but this model has no tensor-parallel rules; use '
                      "'fsdp' or give (regex, spec) rules")
    explicit = _parse(list(family_rules))[1]

  def one(path, leaf):
    shape = tuple(getattr(leaf, 'shape', ()))
    if not shape or kind == 'replicate':
      return P()
    itemsize = np.dtype(getattr(leaf, 'dtype', np.float32)).itemsize
    name = path_str(path)
    if kind == 'fsdp':
      return P(*_fsdp_spec(shape, mesh, min_bytes=min_bytes, itemsize=itemsize))
    for pattern, spec in explicit:
      if pattern.search(name):
        if spec == 'fsdp':
          return P(*_fsdp_spec(shape, mesh, min_bytes=min_bytes, itemsize=itemsize))
        spec = _fit(name, shape, tuple(spec), mesh)
        if kind == 'fsdp+tp':
          spec = _fsdp_spec(shape, mesh, spec, min_bytes=min_bytes, itemsize=itemsize)
        return P(*spec)
    if kind == 'tp':      # no family rule: replicated
      return P()
    if kind == 'fsdp+tp':  # no family rule: the automatic FSDP rule
      return P(*_fsdp_spec(shape, mesh, min_bytes=min_bytes, itemsize=itemsize))
    if int(np.prod(shape)) * itemsize < min_bytes:
      return P()
    raise UserError(f'parameter {name} {list(shape)} matches no partition rule; add one (e.g. '
                    "('.*', 'fsdp') or ('.*', ()) to replicate the rest)")
  return jax.tree_util.tree_map_with_path(one, tree)


def _fit(name: str, shape: tuple, spec: tuple, mesh) -> tuple:
  """`spec` padded to the tensor's rank and checked against the mesh (UserError if it cannot)."""
  if len(spec) > len(shape):
    raise UserError(f'partition spec {spec} for {name} has more entries than its {len(shape)} dims')
  spec = spec + (None,) * (len(shape) - len(spec))
  for dim, axis in zip(shape, spec):
    for a in (axis if isinstance(axis, tuple) else (axis,)):
      if a is not None and a not in mesh.shape:
        raise UserError(f'partition spec {spec} for {name} names axis {a!r}; mesh axes: '
                        f'{", ".join(mesh.axis_names)}')
    size = int(np.prod([mesh.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,))
                        if a is not None]))
    if dim % size:
      raise UserError(f'{name} {list(shape)}: dimension {dim} is not divisible by the {size} '
                      f'devices of {axis!r}; change the mesh or the rule')
  return spec


def shardings(tree, mesh, rules='replicate', family_rules=None):
  """NamedShardings for every leaf of `tree` (see `specs`)."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs(tree, mesh, rules, family_rules),
                      is_leaf=lambda x: isinstance(x, P))


def with_shardings(abstract, shards):
  """ShapeDtypeStructs carrying their target shardings (what orbax restores into)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shards)


def per_device_bytes(tree) -> int:
  """Bytes of `tree` that one device holds: arrays or ShapeDtypeStructs with shardings."""
  total = 0
  for x in jax.tree.leaves(tree):
    sh = getattr(x, 'sharding', None)
    shape = sh.shard_shape(x.shape) if sh is not None else x.shape
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
  return total
