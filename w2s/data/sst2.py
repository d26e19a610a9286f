"""SST-2 sentence sentiment (TFDS catalog `glue/sst2`; 67,349 train, 872 validation).

Socher et al. (2013), GLUE (Wang et al., 2019). Needs internet on first use (see
`w2s.data.catalog`). GLUE's test labels are hidden, so 'test' here is GLUE's validation split.
Label 1 = positive.
"""
from w2s.data import base
from w2s.data import catalog

LABEL_NAMES = ['negative', 'positive']


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  # the TFDS test split is unlabelled: validation is the test set
  return catalog.labelled_dataset('sst2', 'glue/sst2', source='sentence', input_kind='text',
                                  label_names=LABEL_NAMES,
                                  splits={'train': 'train', 'test': 'validation'},
                                  data_dir=data_dir, download=download)
