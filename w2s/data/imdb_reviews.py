"""IMDB movie reviews, positive vs negative (TFDS catalog `imdb_reviews`; 25k train, 25k test).

Maas et al. (2011), "Learning Word Vectors for Sentiment Analysis". Needs internet on first use
(see `w2s.data.catalog`). Label 1 = positive. The unlabelled 'unsupervised' split is not loaded.
"""
from w2s.data import base
from w2s.data import catalog
from w2s.data import streaming

LABEL_NAMES = ['negative', 'positive']

_SPEC = dict(name='imdb_reviews', tfds_name='imdb_reviews', source='text', input_kind='text',
             label_names=LABEL_NAMES)


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  return catalog.labelled_dataset(**_SPEC, data_dir=data_dir, download=download)


def stream(*, data_dir: str | None = None, download: bool = True) -> streaming.StoredSplits:
  """`load`'s splits left on disk, read a batch at a time (`streaming=True`; see catalog.py)."""
  return catalog.labelled_stream(**_SPEC, data_dir=data_dir, download=download)
