"""Input views (w2s/views): hand-computed values, purity, and one-line errors for bad options."""
import numpy as np
import pytest

from w2s import options, registry
from w2s.errors import UserError
from w2s.views import avg_pool, crop, feature_subset, truncate


def _images(*rows_per_channel):
  """One image [1, H, W, C] uint8 from C nested lists [H][W]."""
  return np.stack([np.asarray(c, np.uint8) for c in rows_per_channel], axis=-1)[None]


def _raw_images(img):
  return {'id': np.arange(len(img), dtype=np.int64), 'label': np.zeros(len(img), np.int64),
          'image': img}


def test_avg_pool_4x4_by_2():
  img = _images([[0, 2, 4, 6],
                 [2, 4, 6, 8],
                 [10, 10, 1, 0],
                 [10, 10, 0, 1]])
  raw = _raw_images(img)
  before = img.copy()
  small = avg_pool.apply(raw, input_kind='image', size=2, resize=False)
  # block means 2, 6, 10 and 0.5 (rounded half up to 1)
  np.testing.assert_array_equal(small['image'][0, :, :, 0], [[2, 6], [10, 1]])
  full = avg_pool.apply(raw, input_kind='image', size=2)
  assert full['image'].dtype == np.uint8 and full['image'].shape == (1, 4, 4, 1)
  np.testing.assert_array_equal(full['image'][0, :, :, 0], [[2, 2, 6, 6], [2, 2, 6, 6],
                                                            [10, 10, 1, 1], [10, 10, 1, 1]])
  np.testing.assert_array_equal(raw['image'], before)  # pure: the input is untouched
  assert full['id'] is raw['id'] and set(full) == set(raw)


def test_avg_pool_uneven_blocks_channels_and_rectangles():
  img = _images([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[255] * 3] * 3)
  out = avg_pool.apply(_raw_images(img), input_kind='image', size=2)['image'][0]
  # edge blocks average only their pixels: (1+2+4+5)/4=3, (3+6)/2=4.5->5, (7+8)/2=7.5->8, 9
  np.testing.assert_array_equal(out[:, :, 0], [[3, 3, 5], [3, 3, 5], [8, 8, 9]])
  np.testing.assert_array_equal(out[:, :, 1], 255)  # no uint8 overflow, channels separate
  rect = avg_pool.apply(_raw_images(img), input_kind='image', size=(1, 3), resize=False)
  np.testing.assert_array_equal(rect['image'][0, :, 0, 0], [2, 5, 8])  # row means
  one = avg_pool.apply(_raw_images(img), input_kind='image', size=1)
  np.testing.assert_array_equal(one['image'], img)


def test_crop_centred_and_box():
  img = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
  centred = crop.apply(_raw_images(img), input_kind='image', size=2)['image'][0, :, :, 0]
  np.testing.assert_array_equal(centred, [[0, 0, 0, 0], [0, 5, 6, 0], [0, 9, 10, 0],
                                          [0, 0, 0, 0]])
  boxed = crop.apply(_raw_images(img), input_kind='image', box=(0, 1, 2, 3), keep_shape=False)
  np.testing.assert_array_equal(boxed['image'][0, :, :, 0], [[1, 2, 3], [5, 6, 7]])
  with pytest.raises(UserError, match='exactly one of size'):
    crop.apply(_raw_images(img), input_kind='image')
  with pytest.raises(UserError, match='does not fit the 4x4 images'):
    crop.apply(_raw_images(img), input_kind='image', box=(2, 2, 3, 1))


def test_truncate_keeps_first_words_and_never_the_pair():
  raw = {'id': np.arange(3, dtype=np.int64), 'label': np.zeros(3, np.int64),
         'text': np.array(['one two three four', '  a   b', 'x'], dtype=object),
         'text_pair': np.array(['p q r s t'] * 3, dtype=object)}
  out = truncate.apply(raw, input_kind='text', max_words=2)
  assert out['text'].tolist() == ['one two', '  a   b', 'x'] and out['text'].dtype == object
  assert out['text_pair'] is raw['text_pair']
  assert raw['text'][0] == 'one two three four'
  assert truncate.apply(raw, input_kind='text', max_words=1)['text'].tolist() == ['one', '  a',
                                                                                  'x']
  with pytest.raises(UserError, match='max_words=0 must be a whole number >= 1'):
    truncate.apply(raw, input_kind='text', max_words=0)


def test_feature_subset_indices_size_and_seeded_fraction():
  x = np.arange(12, dtype=np.float32).reshape(2, 6)
  raw = {'id': np.arange(2, dtype=np.int64), 'label': np.zeros(2, np.int64), 'x': x}
  np.testing.assert_array_equal(feature_subset.apply(raw, input_kind='vector', size=2)['x'],
                                [[0, 1], [6, 7]])
  np.testing.assert_array_equal(
      feature_subset.apply(raw, input_kind='vector', indices=[4, 0])['x'], [[4, 0], [10, 6]])
  kept = feature_subset.apply(raw, input_kind='vector', indices=[1], keep_shape=True)['x']
  np.testing.assert_array_equal(kept, [[0, 1, 0, 0, 0, 0], [0, 7, 0, 0, 0, 0]])
  assert kept.dtype == np.float32
  half = feature_subset.chosen(20, fraction=0.5, seed=0)
  assert len(half) == 10 and np.all(np.diff(half) > 0)
  np.testing.assert_array_equal(feature_subset.chosen(20, fraction=0.5, seed=0), half)
  assert feature_subset.chosen(20, fraction=0.5, seed=1).tolist() != half.tolist()
  wide = np.random.RandomState(0).rand(5, 20).astype(np.float32)
  rows = {'id': np.arange(5, dtype=np.int64), 'label': np.zeros(5, np.int64), 'x': wide}
  full = feature_subset.apply(rows, input_kind='vector', fraction=0.5)['x']
  np.testing.assert_array_equal(full, wide[:, half])
  some = feature_subset.apply({k: v[3:] for k, v in rows.items()}, input_kind='vector',
                              fraction=0.5)['x']
  np.testing.assert_array_equal(some, full[3:])  # per example: independent of the other rows
  for bad, message in [(dict(), 'exactly one of'), (dict(size=2, fraction=0.5), 'exactly one'),
                       (dict(indices=[6]), r'in \[0, 6\)'), (dict(fraction=0.0), r'in \(0, 1\]'),
                       (dict(size=7), 'more than the 6 features')]:
    with pytest.raises(UserError, match=message):
      feature_subset.apply(raw, input_kind='vector', **bad)


@pytest.mark.parametrize('view, hparams, kind', [
    (avg_pool, dict(size=2), 'text'), (crop, dict(size=2), 'vector'),
    (truncate, dict(max_words=3), 'image'), (feature_subset, dict(size=1), 'text'),
])
def test_wrong_input_kind_is_one_user_error(view, hparams, kind):
  raw = {'id': np.zeros(1, np.int64), 'label': np.zeros(1, np.int64),
         'text': np.array(['a b'], dtype=object), 'x': np.zeros((1, 3), np.float32),
         'image': np.zeros((1, 2, 2, 1), np.uint8)}
  with pytest.raises(UserError, match=f"works on .* inputs, but this dataset's input is '{kind}'"):
    view.apply(raw, input_kind=kind, **hparams)


def test_views_are_registered_and_options_are_checked():
  assert registry.known('views') == ['avg_pool', 'crop', 'feature_subset', 'reshape', 'truncate']
  with pytest.raises(UserError, match="'avg_pool' has no option 'sise'"):
    options.plugin('views', dict(name='avg_pool', sise=4), 'weak.input')
  p = options.plugin('views', dict(name='avg_pool', size=2), 'weak.input')
  img = np.full((1, 2, 2, 1), 7, np.uint8)
  out = options.build(p, 'weak.input', raw=_raw_images(img), input_kind='image')
  np.testing.assert_array_equal(out['image'], img)
  missing = options.plugin('views', dict(name='truncate'), 'weak.input')
  with pytest.raises(UserError, match='max_words'):
    options.build(missing, 'weak.input', raw={}, input_kind='text')
