"""AG News topic classification, 4 classes (TFDS catalog `ag_news_subset`; 120k train, 7.6k test).

Zhang et al. (2015), "Character-level Convolutional Networks for Text Classification". Needs
internet on first use (see `w2s.data.catalog`). Text is "{title} {description}".
"""
import numpy as np

from w2s.data import base
from w2s.data import catalog

LABEL_NAMES = ['World', 'Sports', 'Business', 'Sci/Tech']


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  raw = catalog.read('ag_news_subset', {'train': 'train', 'test': 'test'},
                     {'title': 'text', 'description': 'text', 'label': 'int'},
                     data_dir=data_dir, download=download)
  splits = {}
  for s, c in raw.items():
    text = np.array([f'{t} {d}' for t, d in zip(c['title'], c['description'])], dtype=object)
    splits[s] = {'id': base.split_ids(s, c['row']), 'label': c['label'], 'text': text}
  return base.check(base.Dataset('ag_news_subset', 4, LABEL_NAMES, 'text', splits))
