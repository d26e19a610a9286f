"""The one data path: TFDS builders prepared as array_record, read back with `as_data_source`.

Nothing here needs TensorFlow: `tfds.data_source` / `builder.as_data_source()` read array_record
files with the array_record package, and the feature decoders run in numpy (images through pillow).

Data dir: the `data_dir` hparam of a dataset, else $W2S_DATA_DIR, else
~/.cache/w2s/tensorflow_datasets. The same rule holds for catalog datasets, so one directory holds
every prepared dataset of a project.

A build runs under an exclusive file lock (`<data_dir>/<builder name>.lock`, fcntl), and TFDS
itself writes into a temporary `incomplete.*` directory renamed into place at the end: two
processes (or hosts sharing a file system with working locks) that load the same dataset for the
first time build it once; the second waits and then reads the first's files. A prepared dataset is
never rebuilt.
"""
import contextlib
import fcntl
import os
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds

DATA_DIR_ENV = 'W2S_DATA_DIR'


def resolve_data_dir(data_dir: str | None = None) -> str:
  """`data_dir`, else $W2S_DATA_DIR, else ~/.cache/w2s/tensorflow_datasets (expanded)."""
  path = data_dir or os.environ.get(DATA_DIR_ENV) or '~/.cache/w2s/tensorflow_datasets'
  return os.path.abspath(os.path.expanduser(path))


@contextlib.contextmanager
def _file_lock(path: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(make_builder: Callable[[str], Any], data_dir: str | None = None,
            **prepare_kwargs) -> tfds.core.DatasetBuilder:
  """Returns a prepared builder, building it first (once, under a file lock) if needed.

  Args:
    make_builder: data_dir -> builder (e.g. `functools.partial(MyBuilder, config=...)`); called
      with `file_format='array_record'`.
    data_dir: see `resolve_data_dir`.
    **prepare_kwargs: passed to `download_and_prepare` (e.g. a DownloadConfig).
  """
  root = resolve_data_dir(data_dir)
  builder = make_builder(data_dir=root, file_format='array_record')
  if builder.is_prepared():
    return builder
  with _file_lock(os.path.join(root, f'{builder.name}.lock')):
    # Recreated under the lock: another process may have finished the build meanwhile, and a
    # builder reads its split metadata from disk only when constructed.
    builder = make_builder(data_dir=root, file_format='array_record')
    if not builder.is_prepared():
      builder.download_and_prepare(**prepare_kwargs)
      builder = make_builder(data_dir=root, file_format='array_record')
  return builder


def read_rows(source: Sequence[dict]) -> list[dict]:
  """Every example of a TFDS data source, in its stored order.

  Indexes one example at a time: `ArrayRecordDataSource.__getitems__` is ~1.5x faster but breaks
  under `tfds.testing.mock_data` (tfds 4.9.10), and reading is ~25k examples/s either way.
  """
  return [source[i] for i in range(len(source))]


def as_str(value) -> str:
  """TFDS Text values come back as bytes from array_record (str under mock_data)."""
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def column(rows: list[dict], key: str, kind: str) -> np.ndarray:
  """One field of `rows` as an array: kind 'text' -> object [N] of str, 'int' -> int64 [N],
  'array' -> stacked [N, ...] (dtype kept)."""
  if kind == 'text':
    out = np.empty(len(rows), dtype=object)
    out[:] = [as_str(r[key]) for r in rows]
    return out
  if kind == 'int':
    return np.fromiter((int(r[key]) for r in rows), dtype=np.int64, count=len(rows))
  if kind == 'array':
    return np.stack([np.asarray(r[key]) for r in rows]) if rows else np.zeros((0,))
  raise ValueError(f'unknown column kind {kind!r}')


def read_split(builder: tfds.core.DatasetBuilder, split: str,
               fields: dict[str, str]) -> dict[str, np.ndarray]:
  """Columns `fields` ({key: kind}, see `column`) of one split of a prepared builder."""
  rows = read_rows(builder.as_data_source(split=split))
  return {key: column(rows, key, kind) for key, kind in fields.items()}


def sort_by_id(examples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """TFDS stores examples in a hash-shuffled order; Examples are kept sorted by id."""
  order = np.argsort(examples['id'], kind='stable')
  return {k: v[order] for k, v in examples.items()}
