"""Reading tensorflow-datasets catalog entries (helper of imdb_reviews.py, sst2.py, boolq.py, ...).

Catalog datasets download their raw files on first use (internet needed once), are prepared as
array_record under the data dir of `w2s.data.tfds_io` (file-locked, once) and are read with
`builder.as_data_source()`, so TensorFlow is not needed to read them. Some catalog builders still
need TensorFlow to *prepare* (their download/parse code imports it); then install tensorflow once,
prepare, and read without it.

Offline: TFDS retries a failed download for minutes before giving up, so before building an
unprepared dataset `builder` first tries one TCP connection (3 s) to its download host (or to the
proxy of $HTTPS_PROXY) and, when that fails, raises a UserError at once saying what to do.

Example ids: `base.split_ids(split, row)` with row the example's index in the prepared
array_record split (deterministic for a given dataset version), times K plus the candidate index
for datasets that expand one source row into K examples.

Streaming: a plug-in built with `labelled_dataset` also defines
`stream(*, data_dir=None, download=True) -> streaming.StoredSplits` (returning
`labelled_stream` of the same arguments), the hook `streaming=True` looks for: the protocol then
reads training rows a batch at a time from the prepared split, in the order and with the ids and
columns `load` gives, and never materialises the split.
"""
import functools
import importlib
import os
import socket
import threading
import urllib.parse

import numpy as np
import tensorflow_datasets as tfds

from w2s.data import base
from w2s.data import streaming
from w2s.data import tfds_io
from w2s.errors import UserError

# Catalog builders in packages that `import tensorflow_datasets` loads lazily: their module must be
# imported before tfds can find them by name.
_BUILDER_MODULES = {
    'glue': 'tensorflow_datasets.text.glue',
    'cosmos_qa': 'tensorflow_datasets.question_answering.cosmos_qa',
    'yelp_polarity_reviews': 'tensorflow_datasets.text.yelp_polarity',
}
FALLBACK_HOST = ('storage.googleapis.com', 443)  # TFDS's own bucket, for builders without urls
PROBE_TIMEOUT_S = 3.0
DEFAULT_SPLITS = {'train': 'train', 'test': 'test'}  # our split -> TFDS split


def reachable(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
  """Whether a TCP connection to host:port opens within timeout_s (DNS lookup included)."""
  ok = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout_s).close()
      ok.append(True)
    except OSError:
      pass
  # getaddrinfo ignores socket timeouts, so the whole attempt runs in a thread we stop waiting on
  t = threading.Thread(target=connect, daemon=True)
  t.start()
  t.join(timeout_s)
  return bool(ok)


def download_host(b: tfds.core.DatasetBuilder) -> tuple[str, int]:
  """(host, port) a download of `b` connects to first: the proxy if one is set, else the host
  of its first download url (from the builder's checksums), else FALLBACK_HOST."""
  proxy = next((os.environ[k] for k in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy',
                                        'HTTP_PROXY', 'http_proxy') if os.environ.get(k)), None)
  try:
    urls = sorted(b.url_infos or ())
  except Exception:  # pylint: disable=broad-except  # builders without checksums: any host
    urls = []
  url = proxy or (urls[0] if urls else None)
  if not url:
    return FALLBACK_HOST
  parts = urllib.parse.urlsplit(url if '://' in url else f'http://{url}')
  return parts.hostname or FALLBACK_HOST[0], parts.port or (443 if parts.scheme == 'https' else 80)


def require_online(tfds_name: str, b: tfds.core.DatasetBuilder, root: str) -> None:
  """UserError at once, instead of TFDS's minutes of retries, if `b` cannot be downloaded."""
  download = vars(tfds.core.DatasetBuilder)['download_and_prepare']
  if getattr(download, '__qualname__', '') != 'DatasetBuilder.download_and_prepare':
    return  # mocked (`tfds.testing.mock_data`): nothing will download
  host, port = download_host(b)
  if not reachable(host, port):
    raise UserError(
        f'{tfds_name} is not prepared in {root} and its download host {host}:{port} cannot be '
        f'reached (offline?); run once on a machine with internet to download it, or point '
        f'${tfds_io.DATA_DIR_ENV} (or the dataset\'s data_dir) at a directory holding a prepared '
        f'copy')


def builder(tfds_name: str, *, data_dir: str | None = None,
            download: bool = True) -> tfds.core.DatasetBuilder:
  """The prepared builder of catalog entry `tfds_name` ('name' or 'name/config')."""
  module = _BUILDER_MODULES.get(tfds_name.split('/')[0])
  if module:
    importlib.import_module(module)
  make = functools.partial(tfds.builder, tfds_name)
  root = tfds_io.resolve_data_dir(data_dir)
  b = make(data_dir=root, file_format='array_record')
  if tfds_io.is_prepared(b):
    return b
  if not download:
    raise UserError(f'{tfds_name} is not prepared under {root} and download=False; set '
                    'download=True (needs internet once) or data_dir to where it is prepared')
  require_online(tfds_name, b, root)
  try:
    return tfds_io.prepare(make, root)
  except OSError as e:  # includes requests' connection errors
    raise UserError(f'could not download/prepare {tfds_name} into {root}: {e}; catalog datasets '
                    'need internet on first use (or copy a prepared data dir there)') from e


def read(tfds_name: str, splits: dict[str, str], fields: dict[str, str], *,
         data_dir: str | None = None, download: bool = True) -> dict[str, dict[str, np.ndarray]]:
  """Columns of catalog splits, in stored order, plus 'row' (int64 index in the split).

  Args:
    tfds_name: catalog name, e.g. 'glue/sst2'.
    splits: our split name -> TFDS split name (e.g. {'train': 'train', 'test': 'validation'}:
      datasets whose TFDS test split is unlabelled use validation as test).
    fields: feature key -> column kind ('text', 'int', 'array'; see `tfds_io.column`).
  """
  b = builder(tfds_name, data_dir=data_dir, download=download)
  out = {}
  for ours, theirs in splits.items():
    rows = tfds_io.read_rows(b.as_data_source(split=theirs))
    cols = {key: tfds_io.column(rows, key, kind) for key, kind in fields.items()}
    cols['row'] = np.arange(len(rows), dtype=np.int64)
    out[ours] = cols
  return out


def labelled_dataset(name: str, tfds_name: str, *, source: str, input_kind: str,
                     label_names: list[str], splits: dict[str, str] | None = None,
                     data_dir: str | None = None, download: bool = True) -> base.Dataset:
  """A catalog dataset with one input feature `source` and an int 'label' (mnist, imdb, ...).

  The input becomes 'text' (input_kind 'text') or 'image' ('image'); ids come from the row, so
  every split is in stored order with ascending ids (what `labelled_stream` reproduces). A split
  named `base.UNLABELLED` in `splits` (e.g. {'unlabelled': 'unsupervised'}) is the dataset's own
  unlabelled data: its labels are `base.UNKNOWN` (-1) whatever the builder stores there.
  """
  field = base.INPUT_FIELDS[input_kind]
  raw = read(tfds_name, splits or DEFAULT_SPLITS,
             {source: 'text' if input_kind == 'text' else 'array', 'label': 'int'},
             data_dir=data_dir, download=download)
  out = {}
  for s, c in raw.items():
    label = (np.full(len(c['row']), base.UNKNOWN, np.int64) if s == base.UNLABELLED
             else c['label'])
    out[s] = {'id': base.split_ids(s, c['row']), 'label': label, field: c[source]}
  return base.check(base.Dataset(name, len(label_names), label_names, input_kind, out))


def labelled_stream(name: str, tfds_name: str, *, source: str, input_kind: str,
                    label_names: list[str], splits: dict[str, str] | None = None,
                    data_dir: str | None = None,
                    download: bool = True) -> streaming.StoredSplits:
  """What `labelled_dataset` (same arguments) reads, as records left on disk: the prepared
  builder, the Dataset metadata, the split names and {source: 'text' | 'image', 'label'}.

  Only the builder's metadata is read here; a UserError if it lacks `source` or an int 'label'
  of len(label_names) classes. The split `base.UNLABELLED` is never streamed: streaming serves
  supervised training, whose rows need labels (the SSL protocols load U in memory).
  """
  if input_kind not in ('text', 'image'):
    raise ValueError(f'input_kind {input_kind!r} is not "text" or "image"')
  b = builder(tfds_name, data_dir=data_dir, download=download)
  features = b.info.features
  label = features['label'] if 'label' in features else None
  if source not in features or getattr(label, 'num_classes', None) != len(label_names):
    raise UserError(f'{tfds_name}: streaming {name} needs features {source!r} and a "label" of '
                    f'{len(label_names)} classes; the builder has {sorted(features)}')
  return streaming.StoredSplits(
      b, base.Dataset(name, len(label_names), list(label_names), input_kind, {}),
      {ours: theirs for ours, theirs in (splits or DEFAULT_SPLITS).items()
       if ours != base.UNLABELLED}, {source: base.INPUT_FIELDS[input_kind], 'label': 'label'},
      row_ids=True)
