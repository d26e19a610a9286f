"""Input views: what one role of a study sees of each example (registry kind 'views').

A view is a module `w2s/views/<name>.py` with `apply(raw, *, input_kind, **hparams) -> raw`: a pure,
deterministic function of the raw Examples (the same example always gives the same view), applied
before featurizing. A weak supervisor of a W2S study often sees a degraded input (pooled pixels,
truncated text, a subset of features): `weak.input = dict(name='avg_pool', size=4)`.

Shipped: `avg_pool`, `crop` (images), `truncate` (text), `feature_subset`, `reshape` (vectors).
Each takes explicit keyword hparams (so `w2s.options.plugin` refuses unknown ones from the
signature) and refuses another input kind with a UserError. A view is called on any subset of
rows, in any order, so it must not depend on which other examples are present. The helpers below
are theirs.
"""
import numpy as np

from w2s.data import base
from w2s.errors import UserError

_FOR_KIND = {'image': 'avg_pool or crop', 'text': 'truncate',
             'vector': 'feature_subset or reshape'}


def field_of(view: str, raw: dict, input_kind: str, accepts: str) -> np.ndarray:
  """The input field of `raw`, or a UserError unless view `view` `accepts` this input_kind."""
  if input_kind != accepts:
    hint = f' (for {input_kind} inputs: {_FOR_KIND[input_kind]})' if input_kind in _FOR_KIND else ''
    raise UserError(f'view {view!r} works on {accepts} inputs, but this dataset\'s input is '
                    f'{input_kind!r}{hint}; change the role\'s input section')
  field = base.INPUT_FIELDS[accepts]
  if field not in raw:
    raise UserError(f'view {view!r}: the examples have no {field!r} field; they have {sorted(raw)}')
  return raw[field]


def images_of(view: str, raw: dict, input_kind: str) -> np.ndarray:
  """uint8 [N, H, W, C] images of `raw` (see `field_of`)."""
  x = np.asarray(field_of(view, raw, input_kind, 'image'))
  if x.dtype != np.uint8 or x.ndim != 4:
    raise UserError(f'view {view!r}: images must be uint8 [N, H, W, C], got {x.dtype} {x.shape}')
  return x


def replaced(raw: dict, field: str, value: np.ndarray) -> dict:
  """A new raw dict: `raw` with `field` replaced (the other arrays shared, never modified)."""
  return {**raw, field: value}


def whole(view: str, name: str, value, minimum: int = 1) -> int:
  """`value` as an int, or a UserError unless it is a whole number >= minimum."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise UserError(f'view {view!r}: {name}={value!r} must be a whole number >= {minimum}')
  return int(value)


def pair(view: str, name: str, value, minimum: int = 1) -> tuple[int, int]:
  """An int or an (h, w) pair of ints >= minimum -> (h, w)."""
  if isinstance(value, (list, tuple)):
    if len(value) != 2:
      raise UserError(f'view {view!r}: {name}={value!r} must be an int or an (h, w) pair')
    return whole(view, name, value[0], minimum), whole(view, name, value[1], minimum)
  v = whole(view, name, value, minimum)
  return v, v
