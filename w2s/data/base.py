"""The in-memory form every dataset plug-in returns, and checks on it.

A dataset plug-in is a module `w2s/data/<name>.py` with a top-level
`load(*, data_dir=None, **hparams) -> Dataset`. Examples are plain dicts of numpy arrays with a
shared leading dim N, so selecting rows, joining labels by id and featurizing stay numpy one-liners.
"""
import dataclasses
from typing import Literal

import numpy as np

from w2s.errors import UserError

Examples = dict[str, np.ndarray]  # each value has leading dim N; always 'id' int64 and 'label' int64

INPUT_FIELDS = {'text': 'text', 'image': 'image', 'vector': 'x'}

# Ids of datasets whose sources number rows per split: split code * ID_STRIDE + row, so ids stay
# unique across splits, fit the int32 'id' of a device batch, and never change with caps or seeds.
SPLIT_CODES = {'train': 0, 'validation': 1, 'test': 2, 'unlabelled': 3}
ID_STRIDE = 10**8

# A dataset's own unlabelled examples (STL-10's 100k 'unlabelled' images, IMDb's 'unsupervised'
# reviews) form the split UNLABELLED, the one split whose labels may be UNKNOWN: they exist for
# semi-supervised learning (`w2s.data.splits.labelled_unlabelled` adds them to U) and must never
# be trained on or scored against.
UNLABELLED = 'unlabelled'
UNKNOWN = -1


@dataclasses.dataclass
class Dataset:
  """A dataset's splits and metadata.

  Attributes:
    name: registry name.
    num_classes: C.
    label_names: C strings.
    input_kind: 'text' (field 'text', object array of str), 'image' (field 'image', uint8 [N, H, W, C])
      or 'vector' (field 'x', float32 [N, D]).
    splits: split name ('train', 'test', ...) -> Examples; ids are unique across all splits.
      Only the split UNLABELLED ('unlabelled') may hold the label UNKNOWN (-1).
      Optional fields: 'text_pair' (object [N], second segment of a pair task such as question +
      candidate answer; tokenized as a pair so truncation cuts only the first segment) and
      'group' (int64 [N], examples derived from one source item, e.g. the candidate answers of one
      question; `w2s.data.splits` keeps a group on one side of every partition).
    notes: what the loader wants a run's results to say about the data (e.g. anthropic_hh's
      skipped pairs per split), a JSON-able dict; empty by default.
  """
  name: str
  num_classes: int
  label_names: list[str]
  input_kind: Literal['text', 'image', 'vector']
  splits: dict[str, Examples]
  notes: dict = dataclasses.field(default_factory=dict)

  def split(self, name: str) -> Examples:
    if name not in self.splits:
      raise UserError(f'dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}')
    return self.splits[name]


def take(examples: Examples, index: np.ndarray) -> Examples:
  """Rows `index` of every field."""
  return {k: v[index] for k, v in examples.items()}


def concat(parts: list[Examples]) -> Examples:
  """Row-wise concatenation of Examples with the same fields."""
  keys = parts[0].keys()
  return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def split_ids(split: str, rows: np.ndarray) -> np.ndarray:
  """int64 [N] ids for 0-based `rows` [N] (row numbers, or row * K + candidate) of `split`."""
  rows = np.asarray(rows, np.int64)
  if split not in SPLIT_CODES:
    raise ValueError(f'no id code for split {split!r}; known: {sorted(SPLIT_CODES)}')
  if rows.size and (rows.min() < 0 or rows.max() >= ID_STRIDE):
    raise UserError(f'split {split!r} has row numbers up to {rows.max()}, beyond the id range '
                    f'[0, {ID_STRIDE}); cap the split size')
  return SPLIT_CODES[split] * ID_STRIDE + rows


def num_rows(examples: Examples) -> int:
  return len(examples['id'])


def known(labels: np.ndarray) -> np.ndarray:
  """bool [N]: which int labels [N] are known (not UNKNOWN, i.e. >= 0)."""
  return np.asarray(labels) >= 0


def check(dataset: Dataset) -> Dataset:
  """Raises UserError unless `dataset` follows the Dataset contract; returns it.

  Checks dtypes and shapes of 'id', 'label' and the input field, equal lengths, labels in
  [0, num_classes) (or UNKNOWN, -1, in the split UNLABELLED only) and ids unique across all
  splits. Cheap (O(N log N)); loaders call it last.
  """
  where = f'dataset {dataset.name!r}'
  if dataset.input_kind not in INPUT_FIELDS:
    raise UserError(f'{where}: input_kind {dataset.input_kind!r} is not one of {sorted(INPUT_FIELDS)}')
  if len(dataset.label_names) != dataset.num_classes:
    raise UserError(f'{where}: {len(dataset.label_names)} label names for '
                    f'{dataset.num_classes} classes')
  field = INPUT_FIELDS[dataset.input_kind]
  all_ids = []
  for split, ex in dataset.splits.items():
    for key in ('id', 'label', field):
      if key not in ex:
        raise UserError(f'{where} split {split!r} has no field {key!r}; it has {sorted(ex)}')
    n = len(ex['id'])
    bad = [k for k, v in ex.items() if len(v) != n]
    if bad:
      raise UserError(f'{where} split {split!r}: fields {bad} do not have {n} rows like "id"')
    if ex['id'].dtype != np.int64 or ex['label'].dtype != np.int64:
      raise UserError(f'{where} split {split!r}: "id" and "label" must be int64, got '
                      f'{ex["id"].dtype} and {ex["label"].dtype}')
    lowest = UNKNOWN if split == UNLABELLED else 0
    if n and (ex['label'].min() < lowest or ex['label'].max() >= dataset.num_classes):
      unknown = (f' (unknown labels, {UNKNOWN}, only in the {UNLABELLED!r} split)'
                 if ex['label'].min() == UNKNOWN else '')
      raise UserError(f'{where} split {split!r}: labels outside [0, {dataset.num_classes})'
                      f'{unknown}')
    _check_input(where, split, dataset.input_kind, ex[field])
    all_ids.append(ex['id'])
  ids = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)
  if len(np.unique(ids)) != len(ids):
    raise UserError(f'{where}: example ids are not unique across splits')
  return dataset


def _check_input(where, split, kind, value):
  ok = {'text': value.dtype == object and value.ndim == 1,
        'image': value.dtype == np.uint8 and value.ndim == 4,
        'vector': value.dtype == np.float32 and value.ndim == 2}[kind]
  if not ok:
    raise UserError(f'{where} split {split!r}: {kind} input has dtype {value.dtype} and shape '
                    f'{value.shape}; see w2s.data.base.Dataset for the expected form')
