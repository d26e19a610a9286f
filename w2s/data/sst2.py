"""SST-2 sentence sentiment (TFDS catalog `glue/sst2`; 67,349 train, 872 validation).

Socher et al. (2013), GLUE (Wang et al., 2019). Needs internet on first use (see
`w2s.data.catalog`). GLUE's test labels are hidden, so 'test' here is GLUE's validation split.
Label 1 = positive.
"""
from w2s.data import base
from w2s.data import catalog

LABEL_NAMES = ['negative', 'positive']


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  raw = catalog.read('glue/sst2', {'train': 'train', 'test': 'validation'},
                     {'sentence': 'text', 'label': 'int'}, data_dir=data_dir, download=download)
  splits = {s: {'id': base.split_ids(s, c['row']), 'label': c['label'], 'text': c['sentence']}
            for s, c in raw.items()}
  return base.check(base.Dataset('sst2', 2, LABEL_NAMES, 'text', splits))
