"""Vectors as images: `dict(name='reshape', shape=(8, 8, 1))`.

Each vector 'x' float32 [D] becomes an array of `shape` (numpy's row-major reshape; one entry may
be -1, inferred from D), so 'x' is [N, *shape]: a flat dataset such as `digits` (D = 64, values in
[0, 1]) then feeds image models (`cnn`, `resnet`) and the image augmentations (flip, translate,
cutout, randaugment read 'x' [B, H, W, C] in [0, 1]). The values are unchanged and the dataset
stays a vector dataset (input kind 'vector'); only the shape of 'x' changes. A shape holding
another number of values than D is a UserError.
"""
import math

import numpy as np

from w2s import views
from w2s.errors import UserError


def dims(shape, d: int) -> tuple[int, ...]:
  """`shape` (ints >= 1, at most one -1) checked against D values -> the full shape."""
  ok = isinstance(shape, (list, tuple)) and shape and all(
      isinstance(v, (int, np.integer)) and not isinstance(v, bool) and (v >= 1 or v == -1)
      for v in shape)
  if not ok or list(shape).count(-1) > 1:
    raise UserError(f"view 'reshape': shape={shape!r} must be a tuple of ints >= 1 (one may be "
                    '-1: inferred), e.g. (8, 8, 1)')
  size = math.prod(int(v) for v in shape if v != -1)
  side = math.isqrt(d)
  hint = f', e.g. ({side}, {side}, 1)' if side * side == d else ''
  if -1 in shape and d % size:
    raise UserError(f"view 'reshape': shape={tuple(shape)!r} does not fit vectors of {d} values "
                    f'({d} is not a multiple of {size}); pick a shape whose product is {d}{hint}')
  if -1 not in shape and size != d:
    raise UserError(f"view 'reshape': shape={tuple(shape)!r} holds {size} values, but the "
                    f'vectors have {d}; pick a shape whose product is {d}{hint}')
  return tuple(d // size if v == -1 else int(v) for v in shape)


def apply(raw: dict, *, input_kind: str, shape) -> dict:
  """`raw` with 'x' float32 [N, D] reshaped to [N, *shape] (see module docstring).

  Args:
    raw: Examples with 'x'; other fields pass through.
    input_kind: must be 'vector'.
    shape: the shape of one example, e.g. (8, 8, 1) (H, W, C) for image models.
  """
  x = np.asarray(views.field_of('reshape', raw, input_kind, 'vector'))
  if x.ndim != 2:
    raise UserError(f"view 'reshape': vectors must be [N, D], got shape {x.shape}; reshape once")
  out = np.ascontiguousarray(x.reshape((len(x),) + dims(shape, x.shape[1])))
  return views.replaced(raw, 'x', out)
