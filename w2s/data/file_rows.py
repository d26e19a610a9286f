"""Rows of a user's data files -> checked columns (helper of `w2s.data.files`).

`read_split` turns the (row number, record) pairs of one split's files into a `Split`: the input
(texts, text pairs or feature vectors), labels, ids and groups, each value checked as it is read.
A bad value is one UserError naming the file, the row and the option that names the column (see
`w2s.data.files` for the options and the row numbering).
"""
import collections
import hashlib
import math
import re
from typing import Mapping

import numpy as np

from w2s.data import base
from w2s.errors import UserError

_INT = re.compile(r'\s*[+-]?\d+\s*')
_WHERE = "dataset 'files'"
MAX_ID = 2**31  # ids travel as int32 in device batches


class Columns:
  """The column options, checked."""

  def __init__(self, *, text, text_pair, features, label, id_, group, strings=()):
    if not isinstance(text, str) or not text:
      raise UserError(f'{_WHERE}: text={text!r} must name a column')
    if label is not None and (not isinstance(label, str) or not label):
      raise UserError(f'{_WHERE}: label={label!r} must name a column, or be None (a task with no '
                      'classes, e.g. generation: every row gets class 0)')
    strings = (strings,) if isinstance(strings, str) else tuple(strings or ())
    if not all(isinstance(c, str) and c for c in strings):
      raise UserError(f'{_WHERE}: strings={strings!r} must list columns kept as text (answers)')
    self.strings = strings
    for opt, v in (('text_pair', text_pair), ('id', id_), ('group', group)):
      if v is not None and (not isinstance(v, str) or not v):
        raise UserError(f'{_WHERE}: {opt}={v!r} must name a column (or be None)')
    if isinstance(features, (list, tuple)):
      features = list(features)
      if not features or not all(isinstance(f, str) and f for f in features):
        raise UserError(f'{_WHERE}: features={features!r} must be a non-empty list of columns')
    elif features is not None and (not isinstance(features, str) or features in ('', '*')):
      raise UserError(f"{_WHERE}: features={features!r} must be a column, a list of columns or "
                      "a prefix ending in '*' ('px_*')")
    if features is not None and text_pair is not None:
      raise UserError(f'{_WHERE}: text_pair= is for text datasets, features= for vectors; drop '
                      'one of them')
    self.text, self.text_pair, self.features = text, text_pair, features
    self.label, self.id, self.group = label, id_, group
    self.columns, self.width = None, None  # feature columns and D, fixed by the first row read

  def options(self) -> dict:
    return dict(text=self.text, text_pair=self.text_pair, features=self.features,
                label=self.label, id=self.id, group=self.group, strings=list(self.strings))


class Split:
  """Columns of one split being read, with where each row came from (for messages)."""

  def __init__(self):
    self.wheres, self.src, self.rows = [], [], []
    self.text, self.pair, self.x, self.label, self.id, self.group = [], [], [], [], [], []
    self.strings = {}  # unmapped string label -> first row holding it
    self.kept = collections.defaultdict(list)  # the `strings=` columns, as text

  def where(self, i: int) -> str:
    return f'{self.wheres[self.src[i]]}: row {self.rows[i]}'

  def examples(self, split: str, cols: Columns) -> base.Examples:
    n = len(self.rows)
    ids = (np.array(self.id, np.int64) if cols.id is not None
           else base.split_ids(split, np.arange(n)))
    out = {'id': ids, 'label': np.array(self.label, np.int64)}
    if cols.features is not None:
      out['x'] = np.array(self.x, np.float32).reshape(n, -1)
    else:
      out['text'] = _objects(self.text)
      if cols.text_pair is not None:
        out['text_pair'] = _objects(self.pair)
    if cols.group is not None:
      out['group'] = np.array(self.group, np.int64)
    for c in cols.strings:
      out[c] = _objects(self.kept[c])
    return out


def _objects(values: list) -> np.ndarray:
  out = np.empty(len(values), dtype=object)
  out[:] = values
  return out


def read_split(split, sources, cols: Columns, mapping) -> Split:
  r, labelled = Split(), split != base.UNLABELLED
  for where, rows in sources:
    r.wheres.append(where)
    for in_file, (row, record) in enumerate(rows):
      at = f'{where}: row {row}'
      if not isinstance(record, Mapping):
        raise UserError(f'{at}: expected an object with columns, got {type(record).__name__}')
      if cols.features is not None:
        _read_features(r, record, at, cols)
      else:
        r.text.append(_text(record, cols.text, 'text', at))
        if cols.text_pair is not None:
          r.pair.append(_pair(record, cols, at, in_file))
      if cols.label is None:
        r.label.append(0)
      else:
        r.label.append(_label(r, record, at, cols.label, mapping) if labelled else base.UNKNOWN)
      for c in cols.strings:
        r.kept[c].append(_text(record, c, c, at))
      if cols.id is not None:
        r.id.append(_id(_value(record, cols.id, 'id', at), cols.id, at))
      if cols.group is not None:
        r.group.append(_group(_value(record, cols.group, 'group', at)))
      r.src.append(len(r.wheres) - 1)
      r.rows.append(row)
  return r


def _value(record, column, option, at):
  if column not in record:
    have = ', '.join(repr(k) for k in list(record)[:20])
    raise UserError(f'{at}: no column {column!r} (the {option}= option); the row has {have}; '
                    f'set {option}= to one of them')
  v = record[column]
  if v is None or (isinstance(v, str) and not v.strip() and option != 'text'):
    raise UserError(f'{at}: column {column!r} (the {option}= option) is empty; fill it in'
                    + ('; rows without a label go in unlabelled=' if option == 'label' else ''))
  return v


def _text(record, column, option, at) -> str:
  v = _value(record, column, option, at)
  if not isinstance(v, str):
    raise UserError(f'{at}: column {column!r} ({option}=) should be a string, got '
                    f'{type(v).__name__} {v!r:.40}')
  return v


def _pair(record, cols: Columns, at, earlier: int) -> str:
  """The second segment; `earlier`: rows of this file before this one (all of them had one)."""
  column = cols.text_pair
  if earlier == 0 and column not in record:
    _value(record, column, 'text_pair', at)  # the missing-column message
  v = record.get(column)
  if v is None or (isinstance(v, str) and not v.strip()):
    seen = f'but the {earlier} rows before it have one: ' if earlier else ''
    raise UserError(f'{at}: no second segment in column {column!r} (text_pair=), {seen}a pair '
                    f'dataset needs both segments in every row; fill it in, or drop text_pair= '
                    f'to read column {cols.text!r} alone')
  return _text(record, column, 'text_pair', at)


def _number(v, column, at) -> float:
  f = None
  if not isinstance(v, (bool, np.bool_)):
    try:
      f = float(v)
    except (TypeError, ValueError):
      pass
  if f is None or not math.isfinite(f):
    raise UserError(f'{at}: feature column {column!r} holds {v!r:.40}, not a finite number')
  return f


def _feature_columns(spec, record, at) -> list[str]:
  """The feature columns: the list given, the one column, or those matching a 'prefix*'."""
  if not isinstance(spec, str):
    return spec
  if not spec.endswith('*'):
    return [spec]
  found = [k for k in record if str(k).startswith(spec[:-1])]
  if not found:
    raise UserError(f'{at}: no column starts with {spec[:-1]!r} (features={spec!r}); the row '
                    f'has {", ".join(repr(k) for k in list(record)[:20])}')
  return found


def _read_features(r: Split, record, at, cols: Columns) -> None:
  if cols.columns is None:  # fixed by the first row read (train's): every row needs these
    cols.columns = _feature_columns(cols.features, record, at)
  values = []
  for c in cols.columns:
    v = _value(record, c, 'features', at)
    for item in v if isinstance(v, (list, tuple, np.ndarray)) else [v]:
      values.append(_number(item, c, at))
  if cols.width is None:
    cols.width = len(values)
  elif len(values) != cols.width:
    raise UserError(f'{at}: {len(values)} feature values, but the rows before it have '
                    f'{cols.width}; every row needs the same number')
  r.x.append(values)


def as_int(v) -> int | None:
  """An int label / id / group value (int, integral float, bool, '12'), or None."""
  if isinstance(v, (bool, np.bool_)):
    return int(v)
  if isinstance(v, (int, np.integer)):
    return int(v)
  if isinstance(v, float) and v.is_integer():
    return int(v)
  if isinstance(v, str) and _INT.fullmatch(v):
    return int(v)
  return None


def _label(r: Split, record, at, column, mapping) -> int:
  v = _value(record, column, 'label', at)
  if isinstance(v, str) and mapping is not None and v in mapping:
    return mapping[v]
  k = as_int(v)
  if k is not None:
    return k
  if isinstance(v, str) and mapping is None:
    r.strings.setdefault(v, at)
    return base.UNKNOWN
  expect = f'one of {sorted(mapping)!r:.200}' if mapping else 'an int class or a string'
  raise UserError(f'{at}: label {v!r:.40} in column {column!r} is not {expect}; fix the row or '
                  'add it to label_names=')


def _id(v, column, at) -> int:
  k = as_int(v) if not isinstance(v, bool) else None
  if k is None or not 0 <= k < MAX_ID:
    raise UserError(f'{at}: id {v!r:.40} in column {column!r} is not an int in [0, {MAX_ID}); '
                    'fix it, or drop id= to number the rows')
  return k


def _group(v) -> int:
  k = as_int(v)
  if k is not None:
    return k
  # a string group: a stable hash, so partitions do not depend on row order
  return int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=7).digest(), 'big')


