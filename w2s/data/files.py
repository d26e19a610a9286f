"""Your own data, no plug-in to write: `dataset=dict(name='files', train=..., test=...)`.

Reads each split from jsonl (`.jsonl`, `.jsonl.gz`), csv (`.csv`, `.csv.gz`, `.tsv`) or parquet
(`.parquet`, needs pyarrow) files, or from a Hugging Face `datasets` dataset (`hf=`), and returns
the `w2s.data.base.Dataset` contract. Options:

  train, test        a file, a glob ('data/train-*.parquet') or a list of them; required
  validation         optional, the same
  unlabelled         optional, the same: rows need no label (they get -1: semi-supervised U only)
  path               a directory searched like `w2s.data.local_files` (train.jsonl, test.parquet,
                     HF shard names ...); train= / test= ... given as well win over what it finds
  hf, hf_config      a Hugging Face dataset name ('imdb', 'glue' + hf_config='sst2') or a directory
                     saved with `DatasetDict.save_to_disk`; train= / test= ... then name its splits
                     (defaults 'train', 'test', and 'validation' when it has one)
  text               the text column ('text'); a text dataset unless `features` is given
  text_pair          a second text segment (question + answer tasks), tokenized as a pair
  features           numeric input instead of text (input kind 'vector', 'x' float32 [N, D]): a
                     list of columns, one column holding a list of numbers per row, or a prefix
                     ending in '*' ('px_*': every column whose name starts with 'px_', file order)
  label              the label column ('label'): ints 0..C-1, or strings mapped by label_names;
                     None for a task with no classes (generation: every row is class 0)
  strings            columns kept as text beside the input (e.g. ('answer',) of a GSM8K-style
                     task, which the generative protocols score by exact match)
  label_names        class names: a list (position = class index) or a mapping {'neg': 0, ...};
                     by default str(0..C-1) with C = the largest label + 1 (HF: its ClassLabel)
  id                 an int column of example ids in [0, 2**31), unique across every split; by
                     default ids number the rows of each split (`base.split_ids`)
  group              a column (int or str) whose equal values stay on one side of every partition

Every value is checked while reading, and a bad one is one UserError naming the file, the row
(1-based line for jsonl and csv, where the csv header is line 1; 0-based row for parquet and hf)
and the option to fix: a missing file or column, a label outside label_names, string labels with
no label_names, an empty split, duplicate ids, a malformed jsonl line, a pair dataset whose rows
lack the second segment. Protocols load the dataset in their check, so `--dry_run` reports it.
The dataset's name is 'files_' + a hash of the files (path, size, mtime) and these options, so
caches keyed by it (frozen features) never mix two versions of your data; a workdir's stages and
checkpoints are keyed by the config, so use a new workdir after editing the files.
"""
import csv
import glob
import gzip
import hashlib
import json
import os
from typing import Iterator, Mapping

import numpy as np

from w2s.data import base
from w2s.data import file_rows
from w2s.data import local_files
from w2s.errors import UserError

SPLITS = ('train', 'validation', 'test', base.UNLABELLED)
FORMATS = ('.jsonl', '.jsonl.gz', '.csv', '.csv.gz', '.tsv', '.parquet')
_WHERE = "dataset 'files'"


def load(*, train=None, test=None, validation=None, unlabelled=None, path: str | None = None,
         hf: str | None = None, hf_config: str | None = None, text: str = 'text',
         text_pair: str | None = None, features=None, label: str = 'label', label_names=None,
         id: str | None = None, group: str | None = None,  # pylint: disable=redefined-builtin
         strings=(), data_dir: str | None = None) -> base.Dataset:
  """Reads the splits (see module docstring); Examples have 'id', 'label', 'text' [+ 'text_pair']
  or 'x' [N, D], and 'group' when `group` is given."""
  del data_dir  # files are read where they lie
  given = dict(train=train, validation=validation, test=test, unlabelled=unlabelled)
  cols = file_rows.Columns(text=text, text_pair=text_pair, features=features, label=label,
                           id_=id, group=group, strings=strings)
  if hf is not None:
    if path is not None:
      raise UserError(f'{_WHERE}: give hf= or path= (files), not both')
    sources, key, hf_names = _hf_sources(hf, hf_config, given, label)
  else:
    sources, key, hf_names = _file_sources(path, given), None, None
  names, mapping = _label_names(label_names if label_names is not None else hf_names)
  read = {s: file_rows.read_split(s, srcs, cols, mapping) for s, srcs in sources.items()}
  num_classes, names = _classes(read, names, mapping, cols)
  splits = {split: r.examples(split, cols) for split, r in read.items()}
  _check_ids(read, splits)
  fp = key or local_files.fingerprint({s: [src[0] for src in v] for s, v in sources.items()})
  spec = json.dumps([fp, cols.options(), names], sort_keys=True, default=str)
  name = 'files_' + hashlib.sha256(spec.encode()).hexdigest()[:8]
  kind = 'vector' if cols.features is not None else 'text'
  return base.check(base.Dataset(name, num_classes, names, kind, splits))


# --- sources: (where, rows) per split --------------------------------------------------------

def _file_sources(path, given) -> dict[str, list]:
  found = local_files.find_files(path, 'files') if path is not None else {}
  files = {s: found.get(s) for s in SPLITS}
  for split, spec in given.items():
    if spec is not None:
      files[split] = _expand(split, spec)
  for split in ('train', 'test'):
    if not files[split]:
      raise UserError(f'{_WHERE}: no {split} split; set {split}=FILE (.jsonl, .csv or .parquet) '
                      'or path=DIR holding train.jsonl and test.jsonl')
  return {s: [(f, _file_rows(f, s)) for f in fs] for s, fs in files.items() if fs}


def _expand(split: str, spec) -> list[str]:
  """A file, a glob or a list of them -> existing files, or a UserError naming the option."""
  specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
  out = []
  for s in specs:
    if not isinstance(s, str) or not s:
      raise UserError(f'{_WHERE}: {split}={spec!r} must be a file, a glob or a list of them')
    p = os.path.expanduser(s)
    matches = sorted(glob.glob(p)) if glob.has_magic(p) else ([p] if os.path.exists(p) else [])
    if not matches:
      raise UserError(f'{_WHERE}: {split}={s!r}: no such file (relative to {os.getcwd()}); fix '
                      f'the path of {split}=')
    for f in matches:
      if os.path.isdir(f) or not f.endswith(FORMATS):
        raise UserError(f'{_WHERE}: {split}={f!r} is not a data file; give a file ending in '
                        f'{", ".join(FORMATS)} (or path=DIR for a directory)')
    out += matches
  return out


def _file_rows(path: str, split: str) -> Iterator[tuple[int, dict]]:
  """(row, record) of a file, with a UserError for an empty one or one that is not UTF-8."""
  def rows():
    n = 0
    try:
      csv_like = path.endswith(('.csv', '.csv.gz', '.tsv'))
      gen = _csv_rows(path) if csv_like else local_files.iter_records(path)
      for n, (row, record) in enumerate(gen, 1):
        yield row, record
    except UnicodeDecodeError as e:
      raise UserError(f'{path}: not UTF-8 text ({e}); save it as UTF-8') from e
    if not n:
      drop = '' if split in ('train', 'test') else f' or drop {split}='
      raise UserError(f'{path}: no rows, so the {split} split is empty; fill the file{drop}')
  return rows()


def _csv_rows(path: str) -> Iterator[tuple[int, dict]]:
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt', encoding='utf-8-sig', newline='') as f:  # -sig: Excel's BOM
    reader = csv.DictReader(f, delimiter='\t' if path.endswith('.tsv') else ',')
    try:
      for record in reader:
        if None in record:  # DictReader's key for cells beyond the header
          raise UserError(f"{path}: row {reader.line_num}: more cells than the header's "
                          f'{len(reader.fieldnames)} columns; quote values that hold a comma')
        yield reader.line_num, record
    except csv.Error as e:
      raise UserError(f'{path}: row {reader.line_num}: not valid csv ({e})') from e


def _hf_sources(hf, hf_config, given, label):
  """Splits of a Hugging Face dataset (name or save_to_disk directory), a fingerprint and the
  names of the label column's ClassLabel (or None)."""
  try:
    import datasets  # optional: only hf= needs it
  except ImportError as e:
    raise UserError(f"{_WHERE}: hf={hf!r} needs the Hugging Face `datasets` library: `pip "
                    'install datasets`, or export the splits to jsonl / parquet and pass train= '
                    'and test=') from e
  if not isinstance(hf, str) or not hf:
    raise UserError(f'{_WHERE}: hf={hf!r} must be a dataset name or a save_to_disk directory')
  local = os.path.isdir(os.path.expanduser(hf))
  try:
    d = (datasets.load_from_disk(os.path.expanduser(hf)) if local
         else datasets.load_dataset(hf, hf_config))
  except Exception as e:  # pylint: disable=broad-except  # network, unknown name, bad directory
    raise UserError(f"{_WHERE}: cannot load hf={hf!r}: {' '.join(str(e).split())[:300]}") from e
  if not hasattr(d, 'keys'):
    raise UserError(f'{_WHERE}: hf={hf!r} holds one split; save a DatasetDict (train and test)')
  defaults = dict(train='train', test='test',
                  validation='validation' if 'validation' in d else None)
  sources, names = {}, None
  for split in SPLITS:
    name = given[split] if given[split] is not None else defaults.get(split)
    if name is None:
      continue
    if name not in d:
      raise UserError(f'{_WHERE}: hf={hf!r} has no split {name!r} (for {split}=); it has '
                      f'{sorted(d)}; set {split}= to one of them')
    where = f'hf {hf!r} split {name!r}'
    sources[split] = [(where, _file_rows_hf(d[name], where, split))]
    feature = (getattr(d[name], 'features', None) or {}).get(label)
    names = names or list(getattr(feature, 'names', None) or []) or None
  key = f'hf:{hf}:{hf_config}:' + ','.join(
      str(getattr(d[s], '_fingerprint', '')) for s in sorted(d))
  return sources, key, names


def _file_rows_hf(ds, where, split):
  n = 0
  for n, record in enumerate(ds, 1):
    yield n - 1, record
  if not n:
    raise UserError(f'{where}: no rows, so the {split} split is empty')


# --- labels and ids across splits ------------------------------------------------------------

def _label_names(spec):
  """label_names option -> (names list or None, {name: class} or None)."""
  if spec is None:
    return None, None
  if isinstance(spec, Mapping):
    ok = all(isinstance(k, str) and file_rows.as_int(v) is not None and not isinstance(v, str) and
             file_rows.as_int(v) >= 0 for k, v in spec.items())
    classes = sorted({int(v) for v in spec.values()}) if ok else []
    if not ok or classes != list(range(len(classes))) or not classes:
      raise UserError(f"{_WHERE}: label_names={spec!r:.200} must map strings to the classes "
                      "0..C-1, each class at least once: {'neg': 0, 'pos': 1}")
    names = [next(k for k, v in spec.items() if int(v) == c) for c in classes]
    return names, {k: int(v) for k, v in spec.items()}
  if (not isinstance(spec, (list, tuple)) or not spec or
      not all(isinstance(n, str) for n in spec) or len(set(spec)) != len(spec)):
    raise UserError(f"{_WHERE}: label_names={spec!r:.200} must be distinct strings "
                    "['neg', 'pos'] (position = class) or a mapping {'neg': 0, 'pos': 1}")
  return list(spec), {n: i for i, n in enumerate(spec)}


def _classes(read: dict, names, mapping, cols: file_rows.Columns):
  """(num_classes, label names), or a UserError naming the first row with a bad label."""
  if cols.label is None:  # no classes (generation): every row is class 0
    return 1, ['none']
  strings = {}  # string label -> its first row
  for r in read.values():
    for v, at in r.strings.items():
      strings.setdefault(v, at)
  if strings:
    found = sorted(strings)
    shown = ', '.join(repr(v) for v in found[:10]) + (' ...' if len(found) > 10 else '')
    raise UserError(f'{strings[found[0]]}: column {cols.label!r} holds string labels ({shown}) '
                    f'and no label_names maps them to classes; add label_names={found[:10]!r} '
                    "(position = class) or a mapping {'name': class, ...}")
  labelled = {s: r for s, r in read.items() if s != base.UNLABELLED}
  if names is None:
    top = max(max(r.label) for r in labelled.values())
    num_classes = top + 1
    if num_classes < 2:
      raise UserError(f'{_WHERE}: every label is {top}; a classifier needs at least two classes '
                      f'(labels 0..C-1), or label_names= to declare them')
    names = [str(i) for i in range(num_classes)]
  num_classes = len(names)
  for r in labelled.values():
    bad = [i for i, y in enumerate(r.label) if not 0 <= y < num_classes]
    if bad:
      declared = f' of label_names={names!r:.120}' if mapping else ''
      extend = ', or extend label_names=' if mapping else ''
      raise UserError(f'{r.where(bad[0])}: label {r.label[bad[0]]} in column {cols.label!r} is '
                      f'outside the classes 0..{num_classes - 1}{declared}; fix the row{extend} '
                      '(rows without a label go in unlabelled=)')
  return num_classes, names


def _check_ids(read: dict, splits: dict) -> None:
  ids = np.concatenate([ex['id'] for ex in splits.values()])
  uniq, counts = np.unique(ids, return_counts=True)
  if len(uniq) == len(ids):
    return
  dup = uniq[np.argmax(counts > 1)]
  places = []
  for split, ex in splits.items():
    for i in np.flatnonzero(ex['id'] == dup)[:2]:
      places.append(f'{read[split].where(int(i))} ({split} split)')
  raise UserError(f'id {dup} appears more than once: {places[0]} and {places[1]}; ids must be '
                  'unique across every split (fix the id column, or drop id= to number the rows)')
