"""Yelp review polarity (TFDS catalog `yelp_polarity_reviews`; 560k train, 38k test).

Zhang et al. (2015). Needs internet on first use (see `w2s.data.catalog`). TFDS's labels '1'
(1-2 stars) and '2' (4-5 stars) become 0 = negative and 1 = positive.
"""
from w2s.data import base
from w2s.data import catalog
from w2s.data import streaming

LABEL_NAMES = ['negative', 'positive']

_SPEC = dict(name='yelp_polarity_reviews', tfds_name='yelp_polarity_reviews', source='text',
             input_kind='text', label_names=LABEL_NAMES)


def load(*, data_dir: str | None = None, download: bool = True) -> base.Dataset:
  return catalog.labelled_dataset(**_SPEC, data_dir=data_dir, download=download)


def stream(*, data_dir: str | None = None, download: bool = True) -> streaming.StoredSplits:
  """`load`'s splits left on disk, read a batch at a time (`streaming=True`; see catalog.py)."""
  return catalog.labelled_stream(**_SPEC, data_dir=data_dir, download=download)
