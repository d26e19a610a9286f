"""IMDB movie reviews, positive vs negative (TFDS catalog `imdb_reviews`; 25k train, 25k test).

Maas et al. (2011), "Learning Word Vectors for Sentiment Analysis". Needs internet on first use
(see `w2s.data.catalog`). Label 1 = positive. The unlabelled 'unsupervised' split is not loaded.
"""
from w2s.data import base
from w2s.data import catalog

LABEL_NAMES = ['negative', 'positive']


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  return catalog.labelled_dataset('imdb_reviews', 'imdb_reviews', source='text', input_kind='text',
                                  label_names=LABEL_NAMES, data_dir=data_dir,
                                  download=download)
