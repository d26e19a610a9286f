"""TFDS builders over files the user downloads (helper of sciq.py, amazon_polarity.py, ...).

For benchmarks of the weak-to-strong release that the TFDS catalog lacks. The user points the
dataset's `path` hparam at a directory holding one file (or several shards) per split, found
recursively by name: `<split>.jsonl`, `<split>.jsonl.gz`, `<split>.parquet` or Hugging Face's
shard names `<split>-00000-of-00003.parquet` (so a `huggingface-cli download ... --local-dir DIR`
tree works as is). Splits looked for: train, validation, test; train and test are required.

Every row is checked against the dataset's schema while the TFDS builder runs: a missing field, a
value of the wrong type or an unknown label is a UserError naming the file and the row (1-based
line for jsonl, 0-based row for parquet). Valid rows are written as array_record under
`<data_dir>/<builder>/files_<fingerprint>/<version>`, the fingerprint hashing each file's path,
size and modification time: changed files are rebuilt, unchanged ones never. Parquet needs pyarrow
(a clear UserError says so when it is missing); jsonl needs nothing. An empty file (zero bytes, or
no rows: a header-only parquet, a jsonl of blank lines) or an unreadable parquet file is a
UserError naming it: usually a download that failed half way.
"""
import functools
import glob
import gzip
import hashlib
import json
import os
from typing import ClassVar, Iterator

import numpy as np
import tensorflow_datasets as tfds

from w2s.data import tfds_io
from w2s.errors import UserError

SPLITS = ('train', 'validation', 'test')
_SUFFIXES = ('.jsonl', '.jsonl.gz', '.parquet')


def find_files(path: str, dataset: str) -> dict[str, list[str]]:
  """split -> sorted files for that split under directory `path` (see module docstring)."""
  if not path or not os.path.isdir(os.path.expanduser(path)):
    raise UserError(f'{dataset}: path={path!r} is not a directory; download the dataset files '
                    f'(see `w2s.data.{dataset}`) and pass path=DIR')
  root = os.path.abspath(os.path.expanduser(path))
  found = {}
  for split in SPLITS:
    files = [f for f in glob.glob(os.path.join(root, '**', f'{split}*'), recursive=True)
             if f.endswith(_SUFFIXES) and _is_split_file(os.path.basename(f), split)]
    if files:
      found[split] = sorted(files)
  missing = [s for s in ('train', 'test') if s not in found]
  if missing:
    raise UserError(f'{dataset}: no {"/".join(missing)} file under {root}; expected e.g. '
                    f'train.jsonl and test.jsonl (or .jsonl.gz / .parquet / HF shard names)')
  for split, files in found.items():
    for f in files:
      if os.path.getsize(f) == 0:  # caught before TFDS starts a build
        raise _empty(f, split, '0 bytes')
  return found


def _empty(path: str, split: str, what: str) -> UserError:
  optional = ' or delete it (the validation split is optional)' if split == 'validation' else ''
  return UserError(f'{path} is empty ({what}); re-download it{optional}')


def _is_split_file(name: str, split: str) -> bool:
  stem = name[len(split):]
  return stem[:1] in ('.', '-') and (stem.startswith('.') or stem[1:2].isdigit())


def fingerprint(files: dict[str, list[str]]) -> str:
  h = hashlib.sha256()
  for split in sorted(files):
    for f in files[split]:
      st = os.stat(f)
      h.update(f'{split}|{f}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
  return h.hexdigest()[:16]


def iter_records(path: str) -> Iterator[tuple[int, dict]]:
  """(row number, record) of a jsonl / jsonl.gz / parquet file (see module docstring)."""
  if path.endswith('.parquet'):
    try:
      import pyarrow.parquet as pq  # optional: only parquet needs it
    except ImportError as e:
      raise UserError(f'{path} is parquet, which needs pyarrow: `pip install pyarrow`, or convert '
                      'it to jsonl') from e
    try:
      table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow.ArrowInvalid / OSError for a truncated or foreign file
      raise UserError(f'{path} is not a readable parquet file ({e}); re-download it') from e
    row = 0
    for batch in table.iter_batches(batch_size=4096):
      for record in batch.to_pylist():
        yield row, record
        row += 1
    return
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt', encoding='utf-8') as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise UserError(f'{path}: row {line_no}: not valid JSON ({e}); fix or re-download it') from e
      yield line_no, record


def check_record(path: str, row: int, record, schema: dict[str, str],
                 labels: dict[str, tuple]) -> None:
  """Raises UserError naming `path` and `row` unless `record` fits `schema` and `labels`."""
  where = f'{path}: row {row}'
  if not isinstance(record, dict):
    raise UserError(f'{where}: expected a JSON object with fields {sorted(schema)}')
  for key, kind in schema.items():
    if key not in record or record[key] is None:
      raise UserError(f'{where}: missing field {key!r}; every row needs {sorted(schema)}')
    value = record[key]
    ok = isinstance(value, str) if kind == 'text' else isinstance(value, (int, np.integer))
    if not ok:
      raise UserError(f'{where}: field {key!r} should be {"a string" if kind == "text" else "an integer"}, '
                      f'got {type(value).__name__} {value!r:.40}')
    if key in labels and value not in labels[key]:
      raise UserError(f'{where}: unknown label {key}={value!r}; expected one of {list(labels[key])}')


class LocalFilesBuilder(tfds_io.QuietBuild, tfds.core.GeneratorBasedBuilder,
                        skip_registration=True):
  """Base: subclasses set `name`, VERSION, SCHEMA ({field: 'text' | 'int'}) and LABELS."""

  SCHEMA: ClassVar[dict[str, str]]
  LABELS: ClassVar[dict[str, tuple]] = {}

  def __init__(self, *, files: dict[str, list[str]], **kwargs):
    self._files = files
    config = tfds.core.BuilderConfig(name=f'files_{fingerprint(files)}',
                                     description=f'built from {files}')
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {'row': np.int64}
    for key, kind in self.SCHEMA.items():
      features[key] = tfds.features.Text() if kind == 'text' else np.int64
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                 description=self.__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # the user downloaded the files
    return {split: self._generate_examples(split, paths) for split, paths in self._files.items()}

  def _generate_examples(self, split, paths):
    n = 0
    for path in paths:
      start = n
      for row, record in iter_records(path):
        check_record(path, row, record, self.SCHEMA, self.LABELS)
        yield n, {'row': n, **{k: (record[k] if self.SCHEMA[k] == 'text' else int(record[k]))
                               for k in self.SCHEMA}}
        n += 1
      if n == start:
        raise _empty(path, split, 'no rows')


def read(builder_cls: type[LocalFilesBuilder], path: str, dataset: str,
         data_dir: str | None = None) -> dict[str, dict[str, np.ndarray]]:
  """split -> columns 'row' and the schema's fields, in file order; builds on first use."""
  files = find_files(path, dataset)
  builder = tfds_io.prepare(functools.partial(builder_cls, files=files), data_dir)
  kinds = {'row': 'int', **builder_cls.SCHEMA}
  out = {}
  for split in files:
    cols = tfds_io.read_split(builder, split, kinds)
    order = np.argsort(cols['row'], kind='stable')
    out[split] = {k: v[order] for k, v in cols.items()}
  return out
