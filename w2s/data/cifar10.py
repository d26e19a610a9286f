"""CIFAR-10 (TFDS catalog `cifar10`; 50k train, 10k test; uint8 [32, 32, 3]).

Krizhevsky (2009). Needs internet on first use (see `w2s.data.catalog`). Weak-to-strong vision
results in Burns et al. (2023) use ImageNet; CIFAR-10 is the usual small stand-in (e.g. the
AdaptConf and FixMatch papers).
"""
from w2s.data import base
from w2s.data import catalog
from w2s.data import streaming

LABEL_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
               'truck']

_SPEC = dict(name='cifar10', tfds_name='cifar10', source='image', input_kind='image',
             label_names=LABEL_NAMES)


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  return catalog.labelled_dataset(**_SPEC, data_dir=data_dir, download=download)


def stream(*, data_dir: str | None = None, download: bool = True) -> streaming.StoredSplits:
  """`load`'s splits left on disk, read a batch at a time (`streaming=True`; see catalog.py)."""
  return catalog.labelled_stream(**_SPEC, data_dir=data_dir, download=download)
