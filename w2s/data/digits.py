"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), offline.

Placeholder reader used by the core tests; the data module turns it into a TFDS builder.
"""
import numpy as np

from w2s.data.base import Dataset


def load(*, data_dir: str | None = None, test_fraction: float = 0.2) -> Dataset:
  del data_dir
  from sklearn.datasets import load_digits
  d = load_digits()
  x = (d.data / 16.0).astype(np.float32)
  y = d.target.astype(np.int64)
  ids = np.arange(len(y), dtype=np.int64)
  n_test = int(round(len(y) * test_fraction))
  # a fixed, seed-independent test split: the last rows
  tr, te = slice(0, len(y) - n_test), slice(len(y) - n_test, None)
  splits = {s: {'id': ids[sl], 'label': y[sl], 'x': x[sl]} for s, sl in (('train', tr), ('test', te))}
  return Dataset('digits', 10, [str(i) for i in range(10)], 'vector', splits)
