"""SVHN digits, cropped (TFDS catalog `svhn_cropped`; 73,257 train, 26,032 test; uint8 [32, 32, 3]).

Netzer et al. (2011), "Reading Digits in Natural Images with Unsupervised Feature Learning".
Needs internet and TensorFlow once, to prepare (the TFDS builder reads its .mat files through
tf.io.gfile; reading needs neither, see `w2s.data.catalog`). Label c is the digit c (TFDS maps
the source's "10" to 0). Classes are imbalanced (about 19% ones, 6% nines in train).

`extra=True` appends the 531,131 easier 'extra' images to train (TFDS split 'train+extra',
604,388 rows; ids number the rows of that concatenation, so train's ids are the same either way).
The SSL benchmarks' "SVHN" (MixMatch, ReMixMatch, FixMatch's SVHN column with 40 / 250 / 1,000
labels) uses train only, the default; their "SVHN+Extra" draws labels and U from train + extra.
FixMatch's release builds both (`svhn_noextra` and `svhn`, google-research/fixmatch,
libml/data.py). With `extra`, `w2s.data.splits.labelled_unlabelled` draws L from all 604,388
rows and U is the rest, their labels kept for reporting only.
"""
from w2s.data import base
from w2s.data import catalog
from w2s.data import streaming

LABEL_NAMES = [str(d) for d in range(10)]


def _spec(extra: bool) -> dict:
  if not isinstance(extra, bool):
    from w2s.errors import UserError
    raise UserError(f'dataset svhn: extra={extra!r} must be True or False')
  return dict(name='svhn', tfds_name='svhn_cropped', source='image', input_kind='image',
              label_names=LABEL_NAMES,
              splits={'train': 'train+extra' if extra else 'train', 'test': 'test'})


def load(*, extra: bool = False, data_dir: str | None = None,
         download: bool = True) -> base.Dataset:
  return catalog.labelled_dataset(**_spec(extra), data_dir=data_dir, download=download)


def stream(*, extra: bool = False, data_dir: str | None = None,
           download: bool = True) -> streaming.StoredSplits:
  """`load`'s splits left on disk, read a batch at a time (`streaming=True`; see catalog.py)."""
  return catalog.labelled_stream(**_spec(extra), data_dir=data_dir, download=download)
