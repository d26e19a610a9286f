"""The `reshape` view (w2s/views/reshape.py): flat vectors as images for a cnn and augmentations."""
import importlib.util
import json
import os

import numpy as np
import pytest

from w2s import options
from w2s.errors import UserError
from w2s.views import reshape

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raw(n=2, d=12):
  return {'id': np.arange(n, dtype=np.int64), 'label': np.zeros(n, np.int64),
          'x': np.arange(n * d, dtype=np.float32).reshape(n, d)}


def test_reshape_is_numpys_row_major_reshape_and_pure():
  raw = _raw()
  out = reshape.apply(raw, input_kind='vector', shape=(2, 3, 2))
  assert out['x'].shape == (2, 2, 3, 2) and out['x'].dtype == np.float32
  assert out['x'][1, 0, 1, 1] == 12 + 3  # row 1 starts at 12; [0, 1, 1] is offset 1*2 + 1
  np.testing.assert_array_equal(out['x'].reshape(2, 12), raw['x'])
  assert raw['x'].shape == (2, 12) and out['id'] is raw['id']  # the input is untouched
  inferred = reshape.apply(raw, input_kind='vector', shape=[-1, 2, 1])
  assert inferred['x'].shape == (2, 6, 2, 1)


@pytest.mark.parametrize('shape, message', [
    ((8, 8, 2), r'shape=\(8, 8, 2\) holds 128 values, but the vectors have 12'),
    ((5, -1), r'does not fit vectors of 12 values \(12 is not a multiple of 5\)'),
    ((-1, -1), r'must be a tuple of ints >= 1 \(one may be -1'),
    ((0, 12), 'must be a tuple of ints >= 1'),
    (12, 'must be a tuple of ints'),
])
def test_a_shape_that_does_not_fit_is_one_user_error(shape, message):
  with pytest.raises(UserError, match=message):
    reshape.apply(_raw(), input_kind='vector', shape=shape)


def test_reshape_refuses_other_inputs_and_unknown_options():
  with pytest.raises(UserError, match=r"works on vector inputs, but this dataset's input is 'te"):
    reshape.apply({'text': np.array(['a'], object)}, input_kind='text', shape=(1,))
  with pytest.raises(UserError, match="'reshape' has no option 'size'"):
    options.plugin('views', dict(name='reshape', size=8), 'input')


def _supervised(arg):
  spec = importlib.util.spec_from_file_location('supervised_cfg',
                                                os.path.join(REPO, 'configs', 'supervised.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_digits_as_8x8_images_train_a_cnn_with_an_image_augmentation(tmp_path):
  from w2s import train
  c = _supervised('runlocal,model=cnn')
  c.input = dict(name='reshape', shape=(8, 8, 1))
  c.augment = dict(name='translate', pad=1)  # reads 'x' [B, H, W, C]: refused on flat vectors
  c.num_steps, c.checkpoint_every = 30, 30
  results = train.train_and_evaluate(c, str(tmp_path / 'ok'))
  assert results['steps'] == 30 and results['accuracy'] > 0.3  # 10 classes: chance is 0.1
  assert json.load(open(tmp_path / 'ok' / 'results.json'))['provenance']['config']['input'] == {
      'name': 'reshape', 'shape': [8, 8, 1]}
  c.input = dict(name='reshape', shape=(8, 8, 2))
  with pytest.raises(UserError, match=r"view 'reshape': shape=\(8, 8, 2\) holds 128 values, but "
                                      r'the vectors have 64'):
    train.train_and_evaluate(c, str(tmp_path / 'bad'))
  assert not (tmp_path / 'bad' / 'checkpoints').exists()  # refused before anything trained
