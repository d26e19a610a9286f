"""Random-access row sources: training splits read from disk a batch at a time.

The batch pipeline (`w2s.data.pipeline`) computes every global batch's row indices from
(seed, step) alone; a `RowSource` lets it read just those rows (and only the calling host's share
of them) instead of indexing a split held in host memory, so a split never has to fit in RAM and
a resumed run still sees exactly the batches an uninterrupted one would.

A source has N rows in ascending id order, the order of the in-memory splits (`tfds_io.sort_by_id`),
so a source and the materialised split it stands for give bit-identical batches. It keeps only its
ids (int64 [N]) in memory, plus, for token inputs, the per-row token counts (int [N]) that let
every host trim a global batch to its longest sequence without reading the other hosts' rows.

* `ArraySource`: an in-memory dict of numeric fields (what the pipeline wraps a dict into).
* `TfdsSource`: records of a prepared TFDS split read with `builder.as_data_source()`
  (array_record, random access, no TensorFlow), featurized per batch by a `transform`; ids are a
  stored 'id' feature (`from_builder`) or the row numbers (`from_rows`, catalog datasets).
* `StoredSplits`: where a dataset plug-in's splits lie in a prepared builder (its TFDS split
  names, feature names and id rule): what a plug-in's `stream` hook returns, and how
  `streaming=True` gets a source per split without running the plug-in's `load`.
* `WithRowIndex`: a source plus the dense 'index' [n] that stateful losses (elr) key on.

`grain` is not needed (and not a dependency): the order is ours, and per-row random access of
array_record is all the pipeline asks of the reader.
"""
import abc
import dataclasses
import threading
from typing import Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from w2s.data import base
from w2s.data import tfds_io
from w2s.errors import UserError

Rows = dict[str, np.ndarray]
SCAN_CHUNK = 1024  # rows per read of a full pass (token counts, materialising a split)


class RowSource(abc.ABC):
  """N rows of numeric fields, read by index; row r always holds the same example.

  `rows` returns at least 'id' int64 [n] and 'label' float32 soft labels [n, C], plus the model
  inputs ('x', or 'input_ids' / 'attention_mask' int32 [n, T] with T the same for every call).
  Indexing a source like a dict (`source['id']`) is a UserError pointing at the pipeline helpers.
  """

  num_classes: int | None = None

  @abc.abstractmethod
  def __len__(self) -> int:
    """N."""

  @abc.abstractmethod
  def ids(self) -> np.ndarray:
    """int64 [N] example ids in row order (ascending), held in memory."""

  @abc.abstractmethod
  def rows(self, indices: np.ndarray) -> Rows:
    """The numeric fields of rows `indices` ([n] ints in [0, N), repeats allowed), in that order."""

  def lengths(self) -> np.ndarray | None:
    """int [N] token counts (attention_mask sums) for trimming batches, or None: rows carry no
    tokens, or the source does not know them (then batches keep their full length T)."""
    return None

  def __getitem__(self, key):
    raise UserError(f'{type(self).__name__} streams rows from disk and cannot be indexed like an '
                    f'in-memory split (asked for {key!r}); use w2s.data.pipeline.num_rows / '
                    'example_ids / sample_rows, or streaming.read_all(source) for a small split')


def _check_indices(indices, n: int) -> np.ndarray:
  idx = np.asarray(indices, np.int64).reshape(-1)
  if idx.size and (idx.min() < 0 or idx.max() >= n):
    raise IndexError(f'row indices in [{idx.min()}, {idx.max()}] outside [0, {n})')
  return idx


class ArraySource(RowSource):
  """An in-memory split (dict of arrays with leading dim N) as a source; object fields dropped."""

  def __init__(self, examples: dict):
    self._data = {k: v for k, v in examples.items() if np.asarray(v).dtype != object}
    label = np.asarray(self._data.get('label', np.zeros((0,))))
    self.num_classes = label.shape[-1] if label.ndim == 2 else None

  def __len__(self) -> int:
    return len(self._data['id'])

  def ids(self) -> np.ndarray:
    return np.asarray(self._data['id'])

  def rows(self, indices: np.ndarray) -> Rows:
    return {k: v[indices] for k, v in self._data.items()}

  def lengths(self) -> np.ndarray | None:
    mask = self._data.get('attention_mask')
    if mask is None:
      return None
    # [N, T], or [N, 2, T] (preference pairs: the longer response of each pair)
    return np.asarray(mask).reshape(len(mask), -1, mask.shape[-1]).sum(-1).max(-1)


class WithRowIndex(RowSource):
  """`base` with 'index' int32 [n] = the rows' positions added: the dense key of per-example loss
  state (`train.with_loss_state`), as the in-memory path's `np.arange(N)` column."""

  def __init__(self, base: RowSource):
    self.base, self.num_classes = base, base.num_classes

  def __len__(self) -> int:
    return len(self.base)

  def ids(self) -> np.ndarray:
    return self.base.ids()

  def rows(self, indices: np.ndarray) -> Rows:
    return {**self.base.rows(indices), 'index': np.asarray(indices, np.int32)}

  def lengths(self) -> np.ndarray | None:
    return self.base.lengths()


def _column(values: list) -> np.ndarray:
  """One feature of n decoded TFDS records: text -> object [n] of str, else stacked [n, ...]."""
  if values and isinstance(values[0], (bytes, str)):
    out = np.empty(len(values), dtype=object)
    out[:] = [tfds_io.as_str(v) for v in values]
    return out
  out = np.stack([np.asarray(v) for v in values]) if values else np.zeros((0,))
  return out.astype(np.int64) if out.dtype.kind in 'iu' and out.ndim == 1 else out


class TfdsSource(RowSource):
  """Rows of one split of a prepared TFDS builder, decoded and featurized a batch at a time.

  A read of rows [n] fetches those records (row r is the r-th smallest id), stacks each feature
  into a raw column ('text' object [n] of str, 'image' uint8 [n, H, W, C], 'x' [n, D], int
  'label' [n] as int64) with 'id' int64 [n], calls `transform(raw)` and keeps its numeric
  fields; an int 'label' [n] that comes back is one-hot encoded to float32 [n, num_classes].
  With `fields` ({TFDS feature: column}), only those features are kept, under the new names
  (e.g. glue/sst2's 'sentence' becomes 'text'), so `raw` is what the plug-in's `load` would give.

  Token counts (`lengths`) come from one pass of `transform` over the whole split the first time
  they are needed, made by every host (int [N] in memory): that is what lets hosts agree on a
  trimmed batch length while each reads only its own rows. `scan_lengths=False` skips the pass;
  batches then keep the transform's full length T (same on every host, not trimmed).
  """

  def __init__(self, records: Sequence[dict], *, transform: Callable[[dict], dict],
               num_classes: int, ids: np.ndarray | None = None, id_key: str = 'id',
               fields: dict[str, str] | None = None, scan_lengths: bool = True,
               name: str = 'source'):
    """Args:
      records: random-access decoded records (`builder.as_data_source(split=...)`).
      transform: raw columns -> numeric fields (e.g. featurize + one-hot labels); must be a
        row-wise, deterministic function (the same row gives the same output in any batch).
      num_classes: C.
      ids: int64 [len(records)] ids of the records in stored order; default: their `id_key`.
      fields: TFDS feature -> raw column name, the features kept; default: all, names unchanged.
      scan_lengths: see class docstring.
      name: for messages.
    """
    self._records, self._transform, self.num_classes = records, transform, num_classes
    self._scan, self.name, self._fields = scan_lengths, name, fields
    stored = np.asarray([r[id_key] for r in records] if ids is None else ids, np.int64)
    if len(stored) != len(records):
      raise UserError(f'{name}: {len(stored)} ids for {len(records)} records')
    self._order = np.argsort(stored, kind='stable')  # row r -> stored record _order[r]
    self._ids = stored[self._order]
    if len(self._ids) > 1 and not np.all(self._ids[1:] > self._ids[:-1]):
      raise UserError(f'{name}: example ids are not unique; a source needs one id per example')
    self._lengths, self._lock = None, threading.Lock()

  @classmethod
  def from_builder(cls, builder: tfds.core.DatasetBuilder, split: str, *, id_key: str = 'id',
                   **kwargs) -> 'TfdsSource':
    """The source of `split` of a prepared array_record builder (`tfds_io.prepare`).

    The ids are read in one pass with every other feature left undecoded (no image decoding).
    """
    if split not in builder.info.splits:
      raise UserError(f'{builder.name} has no split {split!r}; it has '
                      f'{sorted(builder.info.splits)}')
    skip = {k: tfds.decode.SkipDecoding() for k in builder.info.features if k != id_key}
    id_view = builder.as_data_source(split=split, decoders=skip)
    ids = np.fromiter((int(id_view[i][id_key]) for i in range(len(id_view))), np.int64,
                      count=len(id_view))
    kwargs.setdefault('name', f'{builder.name}/{split}')
    return cls(builder.as_data_source(split=split), ids=ids, id_key=id_key, **kwargs)

  @classmethod
  def from_rows(cls, builder: tfds.core.DatasetBuilder, split: str, *, id_split: str,
                **kwargs) -> 'TfdsSource':
    """The source of `split` of a prepared builder whose ids are `base.split_ids(id_split,
    row)`, row the record's index in the stored split (catalog datasets: `catalog.read`).

    Ids ascend with the row, so row r is stored record r: the order of the in-memory split.
    Nothing is read up front.
    """
    known = builder.info.splits  # empty under tfds.testing.mock_data: the reader decides
    # a TFDS split expression ('train+extra', 'train[:90%]') names its parts before any '['
    missing = [p for p in split.split('+') if p.split('[')[0].strip() not in known]
    if known and missing:
      raise UserError(f'{builder.name} has no split {missing[0]!r}; it has {sorted(known)}')
    records = builder.as_data_source(split=split)
    kwargs.setdefault('name', f'{builder.name}/{split}')
    return cls(records, ids=base.split_ids(id_split, np.arange(len(records))), **kwargs)

  def __len__(self) -> int:
    return len(self._ids)

  def ids(self) -> np.ndarray:
    return self._ids

  def raw(self, indices: np.ndarray) -> dict:
    """Raw columns of rows `indices` (before `transform`), with 'id' int64 [n]."""
    idx = _check_indices(indices, len(self))
    records = [self._records[int(i)] for i in self._order[idx]]
    names = self._fields or {k: k for k in (records[0].keys() if records else ())}
    return {**{ours: _column([r[theirs] for r in records]) for theirs, ours in names.items()},
            'id': self._ids[idx]}

  def rows(self, indices: np.ndarray) -> Rows:
    idx = _check_indices(indices, len(self))
    out = {k: v for k, v in self._transform(self.raw(idx)).items()
           if np.asarray(v).dtype != object}
    out['id'] = self._ids[idx]
    label = np.asarray(out.get('label'))
    if label.ndim == 1 and label.dtype.kind in 'iu':
      out['label'] = np.eye(self.num_classes, dtype=np.float32)[label]
    if out.get('label') is None or np.shape(out['label']) != (len(idx), self.num_classes):
      raise UserError(f'{self.name}: transform must return "label" ([n] ints or [n, '
                      f'{self.num_classes}] soft labels); got shape {np.shape(out.get("label"))}')
    return out

  def lengths(self) -> np.ndarray | None:
    if not self._scan or not len(self):
      return None
    with self._lock:  # read by the prefetch thread and the caller's: scanned once
      if self._lengths is None:
        self._lengths = self._scan_lengths()
    return self._lengths if self._lengths.size else None

  def _scan_lengths(self) -> np.ndarray:
    if 'attention_mask' not in self.rows(np.zeros(1, np.int64)):
      return np.zeros(0, np.int64)  # no tokens: nothing to trim
    print(f'[data] {self.name}: counting the tokens of {len(self)} rows (once, to trim batches)',
          flush=True)
    return np.concatenate([self.rows(np.arange(s, min(s + SCAN_CHUNK, len(self))))
                           ['attention_mask'].sum(axis=1) for s in range(0, len(self), SCAN_CHUNK)])


@dataclasses.dataclass(frozen=True)
class StoredSplits:
  """A dataset plug-in's splits as records of a prepared TFDS builder (what `streaming=True` reads).

  Attributes:
    builder: the prepared (array_record) builder.
    dataset: the plug-in's metadata (name, num_classes, label_names, input_kind), `splits` {}.
    splits: our split name -> the builder's split name (e.g. {'test': 'validation'}).
    fields: TFDS feature -> raw column ('image', 'text', 'x', 'label'), the features kept;
      None keeps every feature as it is named (packaged builders store our columns).
    row_ids: True: ids are `base.split_ids(our split, row)` (catalog datasets); False: the
      stored int64 'id' feature.
  """
  builder: tfds.core.DatasetBuilder
  dataset: base.Dataset
  splits: dict[str, str]
  fields: dict[str, str] | None = None
  row_ids: bool = False

  def source(self, split: str, **kwargs) -> TfdsSource:
    """The `TfdsSource` of our split `split`; kwargs (transform, ...) go to `TfdsSource`."""
    if split not in self.splits:
      raise UserError(f'dataset {self.dataset.name!r} has no split {split!r}; it has '
                      f'{sorted(self.splits)}')
    kwargs.setdefault('num_classes', self.dataset.num_classes)
    kwargs.setdefault('name', f'{self.dataset.name}/{split}')
    if self.row_ids:
      return TfdsSource.from_rows(self.builder, self.splits[split], id_split=split,
                                  fields=self.fields, **kwargs)
    return TfdsSource.from_builder(self.builder, self.splits[split], fields=self.fields, **kwargs)


def read_all(source: RowSource, chunk: int = SCAN_CHUNK) -> Rows:
  """Every row of `source` as an in-memory dict (for splits that fit, e.g. an eval split)."""
  n = len(source)
  if not n:
    raise UserError(f'{getattr(source, "name", type(source).__name__)} has no rows')
  parts = [source.rows(np.arange(s, min(s + chunk, n))) for s in range(0, n, chunk)]
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
