"""MNIST handwritten digits (TFDS catalog `mnist`; 60k train, 10k test; uint8 [28, 28, 1]).

LeCun et al. (1998). Needs internet on first use (see `w2s.data.catalog`); `mnist_5k` is the
offline subset.
"""
from w2s.data import base
from w2s.data import catalog

LABEL_NAMES = [str(i) for i in range(10)]


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  return catalog.labelled_dataset('mnist', 'mnist', source='image', input_kind='image',
                                  label_names=LABEL_NAMES, data_dir=data_dir,
                                  download=download)
