"""SST-2 sentence sentiment (TFDS catalog `glue/sst2`; 67,349 train, 872 validation).

Socher et al. (2013), GLUE (Wang et al., 2019). Needs internet on first use (see
`w2s.data.catalog`). GLUE's test labels are hidden, so 'test' here is GLUE's validation split.
Label 1 = positive.
"""
from w2s.data import base
from w2s.data import catalog
from w2s.data import streaming

LABEL_NAMES = ['negative', 'positive']

_SPEC = dict(name='sst2', tfds_name='glue/sst2', source='sentence', input_kind='text',
             label_names=LABEL_NAMES,
             splits={'train': 'train', 'test': 'validation'})  # TFDS's test split is unlabelled


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  return catalog.labelled_dataset(**_SPEC, data_dir=data_dir, download=download)


def stream(*, data_dir: str | None = None, download: bool = True) -> streaming.StoredSplits:
  """`load`'s splits left on disk, read a batch at a time (`streaming=True`; see catalog.py)."""
  return catalog.labelled_stream(**_SPEC, data_dir=data_dir, download=download)
