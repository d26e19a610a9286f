"""Some of the features of every vector: `dict(name='feature_subset', size=16)`.

Exactly one of: `indices` (these features, in this order), `size` (the first `size`), or
`fraction` (a fixed random subset of round(fraction * D) features, at least one, drawn once from
`seed` and D alone and kept in ascending order, so every call on any rows picks the same ones).
With `keep_shape=False` (default) the result is 'x' float32 [N, K]; `keep_shape=True` keeps
[N, D] and sets the other features to 0, so the same model takes the view.
"""
import numpy as np

from w2s import views
from w2s.errors import UserError


def chosen(d: int, *, indices=None, size=None, fraction=None, seed: int = 0) -> np.ndarray:
  """int64 [K]: the feature indices kept out of `d` (see module docstring)."""
  given = [k for k, v in (('indices', indices), ('size', size), ('fraction', fraction))
           if v is not None]
  if len(given) != 1:
    raise UserError("view 'feature_subset': give exactly one of indices=[...], size=K or "
                    f'fraction=F (got {", ".join(given) or "none"})')
  if indices is not None:
    idx = np.asarray(list(indices))
    if idx.ndim != 1 or not len(idx) or idx.dtype.kind not in 'iu':
      raise UserError(f"view 'feature_subset': indices={indices!r} must be a list of ints")
    if idx.min() < 0 or idx.max() >= d or len(np.unique(idx)) != len(idx):
      raise UserError(f"view 'feature_subset': indices must be distinct and in [0, {d}); got "
                      f'{idx.tolist()!r:.80}')
    return idx.astype(np.int64)
  if size is not None:
    k = views.whole('feature_subset', 'size', size)
    if k > d:
      raise UserError(f"view 'feature_subset': size={k} is more than the {d} features")
    return np.arange(k, dtype=np.int64)
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
    raise UserError(f"view 'feature_subset': fraction={fraction!r} must be in (0, 1]")
  k = max(1, int(round(fraction * d)))
  rng = np.random.default_rng([views.whole('feature_subset', 'seed', seed, minimum=0), d])
  return np.sort(rng.choice(d, size=k, replace=False)).astype(np.int64)


def apply(raw: dict, *, input_kind: str, indices=None, size=None, fraction=None, seed: int = 0,
          keep_shape: bool = False) -> dict:
  """`raw` with 'x' (float32 [N, D]) reduced to the chosen features (see module docstring)."""
  x = np.asarray(views.field_of('feature_subset', raw, input_kind, 'vector'))
  if x.ndim != 2:
    raise UserError(f"view 'feature_subset': vectors must be [N, D], got shape {x.shape}")
  idx = chosen(x.shape[1], indices=indices, size=size, fraction=fraction, seed=seed)
  if keep_shape:
    out = np.zeros_like(x)
    out[:, idx] = x[:, idx]
  else:
    out = np.ascontiguousarray(x[:, idx])
  return views.replaced(raw, 'x', out)
