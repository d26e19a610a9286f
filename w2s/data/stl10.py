"""STL-10 (TFDS catalog `stl10`; 5,000 train, 8,000 test, 100,000 unlabelled; uint8 [96, 96, 3]).

Coates, Ng, Lee (2011), "An Analysis of Single-Layer Networks in Unsupervised Feature Learning"
(AISTATS). Needs internet and TensorFlow once, to prepare (a 2.6 GB download; the TFDS builder
reads it through tf.io.gfile; reading needs neither, see `w2s.data.catalog`). Ten classes of
ImageNet-like photos, 500 labelled training and 800 test images each.

`unlabelled=True` also loads the 100,000 'unlabelled' images as the split 'unlabelled' with
label -1 (unknown; `w2s.data.base.UNKNOWN`): drawn from a broader distribution than the labelled
classes (other animals and vehicles too), they are what STL-10 is for, and
`w2s.data.splits.labelled_unlabelled` puts them into U next to the unlabelled rest of train.
Off by default: held in memory they take 2.8 GB as uint8 (11 GB once featurized to float32 for
training; reading them takes a while), and only the semi-supervised protocols use them.
FixMatch's STL-10 benchmark (Sohn et al. 2020) labels 1,000 of train (one of the dataset's 10
predefined training folds of 1,000; here `per_class=100` draws a seeded class-balanced 1,000
instead) with U = the other 4,000 + the 100,000 unlabelled images.
"""
from w2s.data import base
from w2s.data import catalog
from w2s.data import streaming
from w2s.errors import UserError

LABEL_NAMES = ['airplane', 'bird', 'car', 'cat', 'deer', 'dog', 'horse', 'monkey', 'ship',
               'truck']

_SPEC = dict(name='stl10', tfds_name='stl10', source='image', input_kind='image',
             label_names=LABEL_NAMES)


def load(*, unlabelled: bool = False, data_dir: str | None = None,
         download: bool = True) -> base.Dataset:
  if not isinstance(unlabelled, bool):
    raise UserError(f'dataset stl10: unlabelled={unlabelled!r} must be True or False')
  splits = dict(catalog.DEFAULT_SPLITS, **({base.UNLABELLED: 'unlabelled'} if unlabelled else {}))
  return catalog.labelled_dataset(**_SPEC, splits=splits, data_dir=data_dir, download=download)


def stream(*, data_dir: str | None = None, download: bool = True) -> streaming.StoredSplits:
  """`load`'s labelled splits (train, test) left on disk, read a batch at a time
  (`streaming=True`; see catalog.py)."""
  return catalog.labelled_stream(**_SPEC, data_dir=data_dir, download=download)
