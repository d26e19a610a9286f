"""IMDB movie reviews, positive vs negative (TFDS catalog `imdb_reviews`; 25k train, 25k test).

Maas et al. (2011), "Learning Word Vectors for Sentiment Analysis". Needs internet on first use
(see `w2s.data.catalog`). Label 1 = positive. `unlabelled=True` also loads the 50,000 reviews of
TFDS's 'unsupervised' split as the split 'unlabelled' with label -1 (unknown;
`w2s.data.base.UNKNOWN`), which `w2s.data.splits.labelled_unlabelled` adds to U: UDA's IMDb
benchmark (Xie et al. 2020) trains on 20 labels with U = the rest of train + these 50,000.
"""
from w2s.data import base
from w2s.data import catalog
from w2s.data import streaming
from w2s.errors import UserError

LABEL_NAMES = ['negative', 'positive']

_SPEC = dict(name='imdb_reviews', tfds_name='imdb_reviews', source='text', input_kind='text',
             label_names=LABEL_NAMES)


def load(*, unlabelled: bool = False, data_dir: str | None = None,
         download: bool = True) -> base.Dataset:
  if not isinstance(unlabelled, bool):
    raise UserError(f'dataset imdb_reviews: unlabelled={unlabelled!r} must be True or False')
  splits = dict(catalog.DEFAULT_SPLITS,
                **({base.UNLABELLED: 'unsupervised'} if unlabelled else {}))
  return catalog.labelled_dataset(**_SPEC, splits=splits, data_dir=data_dir, download=download)


def stream(*, data_dir: str | None = None, download: bool = True) -> streaming.StoredSplits:
  """`load`'s labelled splits (train, test) left on disk, read a batch at a time
  (`streaming=True`; see catalog.py)."""
  return catalog.labelled_stream(**_SPEC, data_dir=data_dir, download=download)
