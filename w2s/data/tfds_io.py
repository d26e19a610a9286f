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

Logs: TFDS warns for every unprepared builder it checks ("Variant folder ... has no
dataset_info.json") and prints a download banner sized "Unknown size" for builders with nothing to
download; `is_prepared` checks quietly, and builders with `QuietBuild` (user files, packaged data)
print one line instead. TFDS's tqdm bars show only on an interactive terminal (in a log file their
carriage returns and cursor moves are noise, in a notebook a block each), and never for builders
that set `PROGRESS_BAR = False`. TFDS also warns on every run that reads images that OpenCV is not
installed (it decodes with pillow then, which is all we need), and on every construction of a
builder from user files "Using custom data configuration: ..." (that config is the files'
fingerprint, by design): both are filtered out of the absl logger.
"""
import contextlib
import fcntl
import logging
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

DATA_DIR_ENV = 'W2S_DATA_DIR'


_QUIET = ('OpenCV is not installed.', 'Using custom data configuration')


def _not_quieted(record: logging.LogRecord) -> bool:
  """False for TFDS's messages in `_QUIET`."""
  return not str(record.msg).startswith(_QUIET)


if _not_quieted not in logging.getLogger('absl').filters:
  logging.getLogger('absl').addFilter(_not_quieted)


def resolve_data_dir(data_dir: str | None = None) -> str:
  """`data_dir`, else $W2S_DATA_DIR, else ~/.cache/w2s/tensorflow_datasets (expanded)."""
  path = data_dir or os.environ.get(DATA_DIR_ENV) or '~/.cache/w2s/tensorflow_datasets'
  return os.path.abspath(os.path.expanduser(path))


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """`builder.is_prepared()` without TFDS's warning for a version folder that does not exist yet."""
  info = os.path.join(os.fspath(builder.data_dir), 'dataset_info.json')
  return os.path.isfile(info) and builder.is_prepared()


class QuietBuild:
  """Mixin of builders with nothing to download: one "preparing" line instead of TFDS's banner."""

  PROGRESS_BAR: bool = True  # TFDS's bars on a terminal while generating (big user files)

  def _log_download_bytes(self) -> None:
    print(f'[data] preparing {self.name} in {self.data_dir} (first use only)', file=sys.stderr,
          flush=True)

  def _log_download_done(self) -> None:
    pass


def _on_terminal() -> bool:
  """Whether stderr is an interactive terminal (not a log file, a pipe or a notebook)."""
  from w2s import metrics
  return sys.stderr.isatty() and not metrics.in_notebook()


@contextlib.contextmanager
def _progress_bars(enable: bool):
  was = getattr(tqdm_utils, '_active', True)
  tfds.display_progress_bar(enable and was and _on_terminal())
  try:
    yield
  finally:
    tfds.display_progress_bar(was)


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
  if is_prepared(builder):
    return builder
  with _file_lock(os.path.join(root, f'{builder.name}.lock')):
    # Recreated under the lock: another process may have finished the build meanwhile, and a
    # builder reads its split metadata from disk only when constructed.
    builder = make_builder(data_dir=root, file_format='array_record')
    if not is_prepared(builder):
      with _progress_bars(getattr(builder, 'PROGRESS_BAR', True)):
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
