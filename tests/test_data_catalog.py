"""Catalog datasets through `tfds.testing.mock_data` + `as_data_source` (no TensorFlow, no network),
and the datasets' own unlabelled splits (label -1, unknown).

mock_data serves every catalog builder used here without TensorFlow, through the same
`builder.as_data_source()` path as real data (random strings / pixels, train == test). TFDS's
`super_glue/boolq` cannot even be constructed without TensorFlow, which is why `boolq` reads the
stand-alone `bool_q` builder.
"""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from w2s import registry
from w2s.data import base
from w2s.errors import UserError

N = 12
CATALOG = {  # registry name -> (input kind, classes)
    'imdb_reviews': ('text', 2), 'sst2': ('text', 2), 'boolq': ('text', 2),
    'cosmos_qa': ('text', 2), 'ag_news_subset': ('text', 4), 'yelp_polarity_reviews': ('text', 2),
    'mnist': ('image', 10), 'cifar10': ('image', 10), 'svhn': ('image', 10),
    'stl10': ('image', 10),
}
UNLABELLED = {'stl10': 'unlabelled', 'imdb_reviews': 'unsupervised'}  # -> their TFDS split


def _load(name, tmp_path, **hparams):
  with tfds.testing.mock_data(num_examples=N):
    return registry.build('datasets', dict(name=name, **hparams), data_dir=str(tmp_path))


@pytest.mark.parametrize('name', sorted(CATALOG))
def test_catalog_dataset_loads_through_data_source(name, tmp_path):
  ds = _load(name, tmp_path)
  kind, classes = CATALOG[name]
  assert (ds.name, ds.input_kind, ds.num_classes) == (name, kind, classes)
  assert sorted(ds.splits) == ['test', 'train']
  base.check(ds)  # dtypes, label range, ids unique across splits
  per_question = 4 if name == 'cosmos_qa' else 1
  for split, ex in ds.splits.items():
    assert len(ex['id']) == N * per_question
    code = base.SPLIT_CODES[split] * base.ID_STRIDE
    assert ex['id'].min() >= code and ex['id'].max() < code + base.ID_STRIDE
    if kind == 'text':
      assert all(isinstance(t, str) and t for t in ex['text'])
    else:
      assert ex['image'].dtype == np.uint8 and ex['image'].shape[1:] in [
          (28, 28, 1), (32, 32, 3), (96, 96, 3)]
  assert max(ds.splits['train']['id']) < np.iinfo(np.int32).max  # fits the batch's int32 'id'


@pytest.mark.parametrize('name', sorted(UNLABELLED))
def test_a_datasets_own_unlabelled_split_has_unknown_labels(name, tmp_path, monkeypatch):
  from w2s.data import catalog
  asked = []
  read = catalog.read
  monkeypatch.setattr(catalog, 'read', lambda tfds_name, splits, *a, **k: asked.append(
      dict(splits)) or read(tfds_name, splits, *a, **k))
  ds = _load(name, tmp_path, unlabelled=True)
  assert asked[-1] == {'train': 'train', 'test': 'test', 'unlabelled': UNLABELLED[name]}
  assert sorted(ds.splits) == ['test', 'train', 'unlabelled']
  unl = ds.splits['unlabelled']
  assert len(unl['id']) == N and (unl['label'] == base.UNKNOWN).all()  # mock labels are 0..C-1
  code = base.SPLIT_CODES['unlabelled'] * base.ID_STRIDE
  assert unl['id'].min() >= code and unl['id'].max() < code + base.ID_STRIDE
  assert all(base.known(ds.splits[s]['label']).all() for s in ('train', 'test'))
  base.check(ds)
  assert sorted(_load(name, tmp_path).splits) == ['test', 'train']  # off by default
  with pytest.raises(UserError, match='unlabelled=.yes. must be True or False'):
    _load(name, tmp_path, unlabelled='yes')


def test_svhn_extra_reads_train_and_extra_as_train(tmp_path, monkeypatch):
  from w2s.data import catalog
  asked = []
  read = catalog.read
  monkeypatch.setattr(catalog, 'read', lambda tfds_name, splits, *a, **k: asked.append(
      (tfds_name, dict(splits))) or read(tfds_name, splits, *a, **k))
  plain, extra = _load('svhn', tmp_path), _load('svhn', tmp_path, extra=True)
  assert asked == [('svhn_cropped', {'train': 'train', 'test': 'test'}),
                   ('svhn_cropped', {'train': 'train+extra', 'test': 'test'})]
  assert sorted(extra.splits) == ['test', 'train']
  # ids number the rows of 'train+extra', so train's keep their ids (mock_data serves N rows for
  # any split expression, so the extra rows themselves are not exercised here)
  np.testing.assert_array_equal(plain.splits['train']['id'], extra.splits['train']['id'][:N])
  with pytest.raises(UserError, match='extra=1 must be True or False'):
    _load('svhn', tmp_path, extra=1)


def test_check_allows_unknown_labels_only_in_the_unlabelled_split():
  def ds(split, labels):
    ex = {'id': np.arange(3, dtype=np.int64), 'label': np.array(labels, np.int64),
          'x': np.zeros((3, 2), np.float32)}
    return base.Dataset('toy', 2, ['a', 'b'], 'vector', {split: ex})
  base.check(ds('unlabelled', [-1, -1, 1]))
  for split, labels in (('train', [0, -1, 1]), ('test', [-1, 0, 0]), ('unlabelled', [-2, 0, 0]),
                        ('unlabelled', [0, 2, -1])):
    with pytest.raises(UserError, match=rf"split '{split}': labels outside \[0, 2\)"):
      base.check(ds(split, labels))
  with pytest.raises(UserError, match="only in the 'unlabelled' split"):
    base.check(ds('train', [0, -1, 1]))


def test_one_hot_refuses_unknown_labels_and_soft_labels_zero_them():
  from w2s.data import pipeline
  from w2s.protocols import learners
  with pytest.raises(UserError, match='-1 is an unknown label'):
    pipeline.one_hot_labels({'label': np.array([0, -1])}, 2)  # np.eye(2)[-1] would be class 1
  with pytest.raises(UserError, match=r'must be in \[0, 2\)'):
    pipeline.one_hot_labels({'label': np.array([0, 2])}, 2)
  np.testing.assert_array_equal(learners.soft_labels({'label': np.array([1, -1, 0])}, 2),
                                [[0, 1], [0, 0], [1, 0]])


def test_boolq_formatting_is_the_release_string(tmp_path):
  ds = _load('boolq', tmp_path)
  with tfds.testing.mock_data(num_examples=N):
    rows = tfds.data_source('bool_q', split='train')
    raw = [rows[i] for i in range(N)]
  ex = ds.splits['train']
  for i, r in enumerate(raw):
    full = ex['text'][i] + ex['text_pair'][i]
    assert full == f"Passage: {r['passage']}\nQuestion: {r['question']}"
    assert ex['label'][i] == int(r['answer'])


def test_cosmos_qa_candidates(tmp_path):
  ds = _load('cosmos_qa', tmp_path)
  ex = ds.splits['train']
  groups, counts = np.unique(ex['group'], return_counts=True)
  assert len(groups) == N and set(counts) == {4}
  for g in groups:
    rows = ex['group'] == g
    assert ex['label'][rows].sum() == 1  # mock answers never read "None of the above"
    assert len(set(ex['text'][rows])) == 1 and len(set(ex['text_pair'][rows])) == 4
    assert all(p.startswith('Question: ') and '\nAnswer: ' in p for p in ex['text_pair'][rows])
  pair = _load('cosmos_qa', tmp_path, mode='pair').splits['train']
  assert len(pair['id']) == 2 * N and pair['label'].sum() == N
  assert set(pair['id']) <= set(ex['id'])  # same ids for the same (question, candidate)
  sample = _load('cosmos_qa', tmp_path, mode='sample', seed=3).splits['train']
  assert len(np.unique(sample['group'])) == len(sample['id']) == N


def test_download_false_on_unprepared_dataset_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='not prepared'):
    registry.build('datasets', dict(name='imdb_reviews', download=False), data_dir=str(tmp_path))


def test_probe_sees_a_closed_and_an_open_localhost_port():
  import socket
  from w2s.data import catalog
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    s.listen(1)
    port = s.getsockname()[1]
    assert catalog.reachable('127.0.0.1', port, timeout_s=2.0)
  assert not catalog.reachable('127.0.0.1', port, timeout_s=2.0)  # closed now: refused at once


def test_offline_unprepared_catalog_dataset_fails_at_once(tmp_path, monkeypatch):
  import time
  from w2s.data import catalog, tfds_io
  probed = []
  monkeypatch.setattr(catalog, 'reachable', lambda host, port, **kw: probed.append(host) or False)
  monkeypatch.setattr(tfds_io, 'prepare', lambda *a, **k: pytest.fail('tried to download'))
  start = time.perf_counter()
  with pytest.raises(UserError) as e:
    registry.build('datasets', dict(name='imdb_reviews'), data_dir=str(tmp_path))
  assert time.perf_counter() - start < 10
  msg = str(e.value)
  assert f'imdb_reviews is not prepared in {tmp_path}' in msg and 'offline' in msg
  assert 'W2S_DATA_DIR' in msg and 'internet' in msg and '\n' not in msg
  assert probed == ['ai.stanford.edu']  # the host of the builder's download url


def test_download_host_is_the_proxy_when_one_is_set(tmp_path, monkeypatch):
  from w2s.data import catalog
  for k in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy', 'HTTP_PROXY', 'http_proxy'):
    monkeypatch.delenv(k, raising=False)
  b = tfds.builder('mnist', data_dir=str(tmp_path), file_format='array_record')
  assert catalog.download_host(b) == ('storage.googleapis.com', 443)
  monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.example:3128')
  assert catalog.download_host(b) == ('proxy.example', 3128)
