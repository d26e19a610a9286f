"""MNIST handwritten digits (TFDS catalog `mnist`; 60k train, 10k test; uint8 [28, 28, 1]).

LeCun et al. (1998). Needs internet on first use (see `w2s.data.catalog`); `mnist_5k` is the
offline subset.
"""
from w2s.data import base
from w2s.data import catalog

LABEL_NAMES = [str(i) for i in range(10)]


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  raw = catalog.read('mnist', {'train': 'train', 'test': 'test'},
                     {'image': 'array', 'label': 'int'}, data_dir=data_dir, download=download)
  splits = {s: {'id': base.split_ids(s, c['row']), 'label': c['label'], 'image': c['image']}
            for s, c in raw.items()}
  return base.check(base.Dataset('mnist', 10, LABEL_NAMES, 'image', splits))
