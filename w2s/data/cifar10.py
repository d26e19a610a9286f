"""CIFAR-10 (TFDS catalog `cifar10`; 50k train, 10k test; uint8 [32, 32, 3]).

Krizhevsky (2009). Needs internet on first use (see `w2s.data.catalog`). Weak-to-strong vision
results in Burns et al. (2023) use ImageNet; CIFAR-10 is the usual small stand-in (e.g. the
AdaptConf and FixMatch papers).
"""
from w2s.data import base
from w2s.data import catalog

LABEL_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
               'truck']


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  raw = catalog.read('cifar10', {'train': 'train', 'test': 'test'},
                     {'image': 'array', 'label': 'int'}, data_dir=data_dir, download=download)
  splits = {s: {'id': base.split_ids(s, c['row']), 'label': c['label'], 'image': c['image']}
            for s, c in raw.items()}
  return base.check(base.Dataset('cifar10', 10, LABEL_NAMES, 'image', splits))
