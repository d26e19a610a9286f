"""Amazon review polarity, from files the user downloads.

Zhang et al. (2015); 3.6M train and 400k test reviews. Not in the TFDS catalog: download it once,
e.g. `huggingface-cli download fancyzhx/amazon_polarity --repo-type dataset --local-dir DIR`,
and load with `path=DIR` (see `w2s.data.local_files` for the file names searched).

Expected schema, one JSON object (or parquet row) per review:
  title (str), content (str), label (int: 0 = negative, 1 = positive).
A row missing a field, or with another label, is a UserError naming the file and row.
Formatting as in the weak-to-strong release (`format_amazon_polarity`): "{title} {content}".
"""
import numpy as np
import tensorflow_datasets as tfds

from w2s.data import base
from w2s.data import local_files

LABEL_NAMES = ['negative', 'positive']


class W2sAmazonPolarity(local_files.LocalFilesBuilder):
  """Amazon reviews: title, content and polarity label."""
  name = 'w2s_amazon_polarity'
  VERSION = tfds.core.Version('1.0.0')
  SCHEMA = {'title': 'text', 'content': 'text', 'label': 'int'}
  LABELS = {'label': (0, 1)}


def load(*, path: str | None = None, data_dir: str | None = None) -> base.Dataset:
  raw = local_files.read(W2sAmazonPolarity, path, 'amazon_polarity', data_dir)
  splits = {}
  for s, c in raw.items():
    text = np.array([f'{t} {x}' for t, x in zip(c['title'], c['content'])], dtype=object)
    splits[s] = {'id': base.split_ids(s, c['row']), 'label': c['label'], 'text': text}
  return base.check(base.Dataset('amazon_polarity', 2, LABEL_NAMES, 'text', splits))
