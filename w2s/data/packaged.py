"""TFDS builders for datasets whose raw files ship inside PyPI wheels (offline, no download).

A subclass names its features and yields `(id, example)` from the packaged file; this base class
adds the int64 'id' feature and a fixed train/test split: an example is in 'test' iff
`w2s.data.splits.holdout_mask(id, 0.2)` (a splitmix64 hash of the id, ~20% of examples),
independent of row order and of every seed. Builds go through `tfds_io.prepare` (array_record,
built once per data dir, file-locked) and print one line, no TFDS progress bars.
"""
import abc
from typing import ClassVar, Iterator

import numpy as np
import tensorflow_datasets as tfds

from w2s.data import splits as splits_lib
from w2s.data import tfds_io
from w2s.errors import UserError

TEST_FRACTION = 0.2


class PackagedBuilder(tfds_io.QuietBuild, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base: subclasses set VERSION, FEATURES, DESCRIPTION, HOMEPAGE and `_source_rows`."""

  PROGRESS_BAR = False  # seconds of work
  FEATURES: ClassVar[dict]
  DESCRIPTION: ClassVar[str] = ''
  HOMEPAGE: ClassVar[str] = ''

  @abc.abstractmethod
  def _source_rows(self) -> Iterator[tuple[int, dict]]:
    """Yields (id, features without 'id') for every example of the packaged file."""

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({'id': np.int64, **self.FEATURES})
    return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION, features=features,
                                 homepage=self.HOMEPAGE, supervised_keys=None)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    rows = list(self._source_rows())
    if not rows:
      raise UserError(f'{self.name}: its packaged source file has no rows (a broken install?); '
                      f'reinstall the package named in {type(self).__module__}')
    ids = np.array([i for i, _ in rows], np.int64)
    test = splits_lib.holdout_mask(ids, TEST_FRACTION)
    return {'train': self._generate_examples([r for r, t in zip(rows, test) if not t]),
            'test': self._generate_examples([r for r, t in zip(rows, test) if t])}

  def _generate_examples(self, rows):
    for i, example in rows:
      yield int(i), {'id': int(i), **example}


def read(builder_cls: type[PackagedBuilder], data_dir: str | None,
         fields: dict[str, str]) -> dict[str, dict[str, np.ndarray]]:
  """{'train', 'test'} -> columns 'id', 'label' and `fields` (see `tfds_io.column`), by id."""
  builder = tfds_io.prepare(builder_cls, data_dir)
  kinds = {'id': 'int', 'label': 'int', **fields}
  return {split: tfds_io.sort_by_id(tfds_io.read_split(builder, split, kinds))
          for split in ('train', 'test')}
