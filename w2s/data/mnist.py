"""MNIST handwritten digits (TFDS catalog `mnist`; 60k train, 10k test; uint8 [28, 28, 1]).

LeCun et al. (1998). Needs internet on first use (see `w2s.data.catalog`); `mnist_5k` is the
offline subset.
"""
from w2s.data import base
from w2s.data import catalog
from w2s.data import streaming

LABEL_NAMES = [str(i) for i in range(10)]

_SPEC = dict(name='mnist', tfds_name='mnist', source='image', input_kind='image',
             label_names=LABEL_NAMES)


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  return catalog.labelled_dataset(**_SPEC, data_dir=data_dir, download=download)


def stream(*, data_dir: str | None = None, download: bool = True) -> streaming.StoredSplits:
  """`load`'s splits left on disk, read a batch at a time (`streaming=True`; see catalog.py)."""
  return catalog.labelled_stream(**_SPEC, data_dir=data_dir, download=download)
