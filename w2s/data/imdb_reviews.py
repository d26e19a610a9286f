"""IMDB movie reviews, positive vs negative (TFDS catalog `imdb_reviews`; 25k train, 25k test).

Maas et al. (2011), "Learning Word Vectors for Sentiment Analysis". Needs internet on first use
(see `w2s.data.catalog`). Label 1 = positive. The unlabelled 'unsupervised' split is not loaded.
"""
from w2s.data import base
from w2s.data import catalog

LABEL_NAMES = ['negative', 'positive']


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  raw = catalog.read('imdb_reviews', {'train': 'train', 'test': 'test'},
                     {'text': 'text', 'label': 'int'}, data_dir=data_dir, download=download)
  splits = {s: {'id': base.split_ids(s, c['row']), 'label': c['label'], 'text': c['text']}
            for s, c in raw.items()}
  return base.check(base.Dataset('imdb_reviews', 2, LABEL_NAMES, 'text', splits))
