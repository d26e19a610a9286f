"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), offline, as vectors.

Source: `sklearn.datasets.load_digits()` (data files inside the scikit-learn wheel). Each example
is 'x' float32 [64] = the 8x8 pixel counts (0-16) divided by 16, so in [0, 1]. Example ids are the
0-based row numbers. Train/test: the fixed ~20% id-hash holdout of `w2s.data.packaged`.
"""
import numpy as np
import tensorflow_datasets as tfds

from w2s.data import base
from w2s.data import packaged

LABEL_NAMES = [str(i) for i in range(10)]


class W2sDigits(packaged.PackagedBuilder):
  """TFDS builder `w2s_digits` (see module docstring)."""
  name = 'w2s_digits'
  VERSION = tfds.core.Version('1.0.0')
  FEATURES = {'x': tfds.features.Tensor(shape=(64,), dtype=np.float32),
              'label': tfds.features.ClassLabel(names=LABEL_NAMES)}
  DESCRIPTION = __doc__
  HOMEPAGE = 'https://scikit-learn.org/stable/datasets/toy_dataset.html'

  def _source_rows(self):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    for i, (xi, yi) in enumerate(zip(x, d.target)):
      yield i, {'x': xi, 'label': int(yi)}


def load(*, data_dir: str | None = None) -> base.Dataset:
  """Builds (first call only) and reads the dataset; Examples have 'id', 'label', 'x' [N, 64]."""
  splits = packaged.read(W2sDigits, data_dir, {'x': 'array'})
  for ex in splits.values():
    ex['x'] = ex['x'].astype(np.float32).reshape(-1, 64)
  return base.check(base.Dataset('digits', 10, LABEL_NAMES, 'vector', splits))
