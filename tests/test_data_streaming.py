"""Streaming rows from disk: the same batches as the in-memory split, per host, resumable.

A tiny TFDS builder is written as array_record to a tmp data dir (offline) and read back as a
`TfdsSource`; its in-memory twin is built from the generator's own rows, sorted by id. Token
fields have varied lengths, so length trimming is exercised, and ids are unordered, so the
source's id ordering is too. Catalog datasets (`catalog.labelled_dataset` plug-ins and their
`stream` hook) are read through `tfds.testing.mock_data` (offline, no TensorFlow), entered inside
each test so the tiny builder's tests read real array_record files.
"""
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from w2s import checkpoint, options, registry, train
from w2s.data import catalog
from w2s.data import pipeline
from w2s.data import streaming
from w2s.errors import UserError
from w2s.protocols import supervised

N_TRAIN, N_TEST, T, C = 50, 21, 24, 3
N_MOCK = 20  # rows of every mocked catalog split (train and test hold the same records)
LABELLED = ['cifar10', 'imdb_reviews', 'mnist', 'sst2', 'stl10', 'svhn', 'yelp_polarity_reviews']


def _example(i: int) -> dict:
  n_tok = 1 + (7 * i) % (T - 1)  # 1 .. 23 real tokens
  tokens = np.zeros(T, np.int32)
  tokens[:n_tok] = 1 + (np.arange(n_tok) + i) % 97
  return {'id': (37 * i) % 101 + 1000 * (i % 3), 'label': i % C, 'tokens': tokens,
          'x': np.array([i, -i, 0.5 * i], np.float32)}


class _Tiny(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  name = 'w2s_streaming_tiny'
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'id': np.int64, 'label': tfds.features.ClassLabel(num_classes=C),
        'tokens': tfds.features.Tensor(shape=(T,), dtype=np.int32),
        'x': tfds.features.Tensor(shape=(3,), dtype=np.float32)}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples(range(N_TRAIN)),
            'test': self._generate_examples(range(N_TRAIN, N_TRAIN + N_TEST))}

  def _generate_examples(self, rows):
    for i in rows:
      yield i, _example(i)


def _transform(raw: dict) -> dict:
  """Raw columns -> numeric fields (what featurization does for a real dataset)."""
  return {'id': raw['id'], 'label': raw['label'], 'x': raw['x'], 'input_ids': raw['tokens'],
          'attention_mask': (raw['tokens'] > 0).astype(np.int32)}


def _in_memory(rows) -> dict:
  ex = [_example(i) for i in rows]
  cols = {k: np.stack([np.asarray(e[k]) for e in ex]) for k in ex[0]}
  cols['id'] = cols['id'].astype(np.int64)
  order = np.argsort(cols['id'])
  return pipeline.one_hot_labels(_transform({k: v[order] for k, v in cols.items()}), C)


@pytest.fixture(scope='module')
def tiny_builder(tmp_path_factory):
  builder = _Tiny(data_dir=str(tmp_path_factory.mktemp('tfds')), file_format='array_record')
  builder.download_and_prepare()
  return builder


@pytest.fixture(scope='module')
def tiny(tiny_builder):
  builder = tiny_builder
  src = {s: streaming.TfdsSource.from_builder(builder, s, transform=_transform, num_classes=C)
         for s in ('train', 'test')}
  return src, {'train': _in_memory(range(N_TRAIN)),
               'test': _in_memory(range(N_TRAIN, N_TRAIN + N_TEST))}


class Counting(streaming.RowSource):
  """A source that records the row indices of every read."""

  def __init__(self, base):
    self.base, self.num_classes, self.reads = base, base.num_classes, []

  def __len__(self):
    return len(self.base)

  def ids(self):
    return self.base.ids()

  def rows(self, indices):
    self.reads.append(np.array(indices))
    return self.base.rows(indices)

  def lengths(self):
    return self.base.lengths()


def _assert_same(a: dict, b: dict):
  assert list(a) == list(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_source_is_the_split_sorted_by_id(tiny):
  src, mem = tiny
  for split in ('train', 'test'):
    np.testing.assert_array_equal(src[split].ids(), mem[split]['id'])
    assert np.all(np.diff(src[split].ids()) > 0)
    _assert_same(streaming.read_all(src[split], chunk=7), mem[split])
    np.testing.assert_array_equal(src[split].lengths(), mem[split]['attention_mask'].sum(1))
  assert pipeline.num_rows(src['train']) == N_TRAIN
  _assert_same(pipeline.sample_rows(src['train'], 2), pipeline.sample_rows(mem['train'], 2))


def test_train_batches_equal_across_epochs_and_on_resume(tiny):
  src, mem = tiny
  kw = dict(global_batch=8, seed=3, length_bucket=5)  # 6 steps per epoch: 14 steps cross two
  got = list(pipeline.train_batches(src['train'], num_steps=14, **kw))
  want = list(pipeline.train_batches(mem['train'], num_steps=14, **kw))
  for a, b in zip(got, want, strict=True):
    _assert_same(a, b)
  widths = {a['input_ids'].shape[1] for a in got}
  assert len(widths) > 1 and max(widths) <= T  # trimmed per batch, differently
  resumed = list(pipeline.train_batches(src['train'], start_step=5, num_steps=9, **kw))
  for a, b in zip(resumed, got[5:], strict=True):
    _assert_same(a, b)


def test_each_host_reads_only_its_rows_and_hosts_agree(tiny):
  src, mem = tiny
  src['train'].lengths()  # the one-time token count pass, made before counting reads
  kw = dict(global_batch=8, seed=1, num_steps=9, length_bucket=4)
  single = list(pipeline.train_batches(mem['train'], **kw))
  hosts = []
  for p in range(2):
    counting = Counting(src['train'])
    batches = list(pipeline.train_batches(counting, process_index=p, process_count=2, **kw))
    for a, b in zip(batches, pipeline.train_batches(mem['train'], process_index=p,
                                                    process_count=2, **kw), strict=True):
      _assert_same(a, b)
    for step, read in enumerate(counting.reads):  # exactly its half of the global batch
      epoch, i = divmod(step, N_TRAIN // 8)
      global_idx = pipeline.epoch_permutation(N_TRAIN, 1, epoch)[i * 8:(i + 1) * 8]
      np.testing.assert_array_equal(read, global_idx[p * 4:(p + 1) * 4])
    assert len(counting.reads) == 9
    hosts.append(batches)
  for a, b, whole in zip(*hosts, single):
    assert a['input_ids'].shape == b['input_ids'].shape  # one trim length on every host
    _assert_same({k: np.concatenate([a[k], b[k]]) for k in a}, whole)


def test_untrimmed_without_lengths(tiny, tiny_builder):
  _, mem = tiny
  plain = streaming.TfdsSource.from_builder(tiny_builder, 'train', transform=_transform,
                                            num_classes=C, scan_lengths=False)
  assert plain.lengths() is None
  for a, b in zip(pipeline.train_batches(plain, global_batch=8, seed=0, num_steps=3),
                  pipeline.train_batches(mem['train'], global_batch=8, seed=0, num_steps=3)):
    assert a['input_ids'].shape == (8, T)
    np.testing.assert_array_equal(a['input_ids'][:, :b['input_ids'].shape[1]], b['input_ids'])
    assert not a['attention_mask'][:, b['input_ids'].shape[1]:].any()


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_batches_equal_with_padding(tiny, process_count):
  src, mem = tiny
  for p in range(process_count):
    kw = dict(global_batch=8, process_index=p, process_count=process_count, length_bucket=4)
    got = list(pipeline.eval_batches(src['test'], **kw))
    # 21 rows: the last global batch has 5 real rows, 4 + 1 of them over two hosts
    assert len(got) == 3 and got[-1]['mask'].sum() == [[5], [4, 1]][process_count - 1][p]
    for a, b in zip(got, pipeline.eval_batches(mem['test'], **kw), strict=True):
      _assert_same(a, b)


def test_stateful_loss_keys_rows_by_position(tiny):
  src, mem = tiny
  s, _ = train.with_loss_state(src['train'], dict(name='elr'))
  m, _ = train.with_loss_state(mem['train'], dict(name='elr'))
  for a, b in zip(pipeline.train_batches(s, global_batch=8, seed=2, num_steps=7),
                  pipeline.train_batches(m, global_batch=8, seed=2, num_steps=7), strict=True):
    _assert_same(a, b)
  with pytest.raises(UserError, match='example_ids'):
    src['train']['id']  # pylint: disable=pointless-statement


def _config(data_dir, streaming_on, **kw):
  return dict(protocol=dict(name='supervised'), seed=0, streaming=streaming_on,
              dataset=dict(name='digits', data_dir=data_dir),
              model=dict(name='mlp', hidden=(32,), dropout=0.1, zero_head=False),
              loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=3e-3),
              schedule=dict(name='constant'), batch_size=64, eval_batch_size=128, num_steps=8,
              log_every=4, checkpoint_every=100, keep_checkpoints=1, mesh=dict(num_devices=1),
              **kw)


def _record_params(monkeypatch) -> dict:
  """{trained from a source?: final params} of every `train.fit` call while the test runs."""
  params, fit = {}, train.fit

  def recording_fit(module, train_examples, **kw):
    state, last = fit(module, train_examples, **kw)
    params[isinstance(train_examples, streaming.TfdsSource)] = jax.device_get(state.params)
    return state, last
  monkeypatch.setattr(train, 'fit', recording_fit)
  return params


def test_supervised_streaming_equals_in_memory(tmp_path, monkeypatch):
  data_dir = str(tmp_path / 'data')
  results, params = {}, _record_params(monkeypatch)
  for on in (False, True):
    results[on] = supervised.run(config=_config(data_dir, on), workdir=str(tmp_path / f'run{on}'))
  assert sorted(params) == [False, True]  # the streaming run really trained from a source
  jax.tree.map(np.testing.assert_array_equal, params[False], params[True])
  assert results[False] == results[True] and results[True]['steps'] == 8
  assert results[True]['accuracy'] > 0.2  # eight steps of a real digits classifier
  fingerprints = [open(checkpoint.fingerprint_path(str(tmp_path / f'run{on}'))).read()
                  for on in (False, True)]
  assert fingerprints[0] == fingerprints[1]  # so a run may resume across the streaming switch


def test_streaming_config_errors(tmp_path):
  names = sorted(LABELLED + ['digits', 'mnist_5k', 'rotten_tomatoes'])
  assert supervised.streamable() == names
  with pytest.raises(UserError, match=rf"'ag_news_subset' cannot stream; these can: "
                                      rf"{', '.join(names)}; set streaming=False$"):
    supervised.check({**_config(None, True), 'dataset': dict(name='ag_news_subset')})
  with pytest.raises(UserError, match='must be True or False'):
    supervised.check(_config(str(tmp_path), 'yes'))


def _stream(name: str, data_dir: str):
  """(the plug-in's in-memory Dataset, the protocol's StoredSplits); call under mock_data."""
  spec = dict(name=name, data_dir=data_dir)
  return (registry.build('datasets', spec),
          supervised.stored_splits(options.plugin('datasets', spec, 'dataset')))


@pytest.mark.parametrize('name', LABELLED)
def test_catalog_stream_reads_what_load_gives(name, tmp_path):
  with tfds.testing.mock_data(num_examples=N_MOCK):
    ds, stored = _stream(name, str(tmp_path))
    meta = stored.dataset
    assert (meta.name, meta.num_classes, meta.label_names, meta.input_kind, meta.splits) == (
        ds.name, ds.num_classes, ds.label_names, ds.input_kind, {})
    assert sorted(stored.splits) == sorted(ds.splits)
    for split, mem in ds.splits.items():
      src = stored.source(split, transform=lambda raw: raw)
      np.testing.assert_array_equal(src.ids(), mem['id'])
      raw = src.raw(np.arange(N_MOCK)[::-1])  # any order: row r is stored record r
      _assert_same({k: raw[k] for k in mem}, {k: v[::-1] for k, v in mem.items()})
      assert sorted(raw) == sorted(mem)  # other features (cifar10 'id', sst2 'idx') dropped


def test_a_datasets_unlabelled_split_is_never_streamed(tmp_path):
  """Streaming serves supervised training: the unlabelled split (labels -1) stays out."""
  with tfds.testing.mock_data(num_examples=N_MOCK):
    spec = dict(name='stl10', unlabelled=True, data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"options \['unlabelled'\] are not applied"):
      supervised.stored_splits(options.plugin('datasets', spec, 'dataset'))
    stored = catalog.labelled_stream(
        'imdb_reviews', 'imdb_reviews', source='text', input_kind='text', label_names=['-', '+'],
        splits={'train': 'train', 'test': 'test', 'unlabelled': 'unsupervised'},
        data_dir=str(tmp_path))
    assert sorted(stored.splits) == ['test', 'train']


@pytest.mark.parametrize('process_count', [1, 2])
def test_mocked_mnist_stream_batches_equal_in_memory(tmp_path, process_count):
  with tfds.testing.mock_data(num_examples=N_MOCK):
    ds, stored = _stream('mnist', str(tmp_path))
    transform = supervised.featurizer(ds, None)
    src, mem = stored.source('train', transform=transform), transform(ds.split('train'))
    assert mem['x'].shape == (N_MOCK, 28, 28, 1) and src.lengths() is None
    kw = dict(global_batch=8, seed=3, num_steps=5, process_count=process_count)  # 2.5 epochs
    for p in range(process_count):
      got = list(pipeline.train_batches(src, process_index=p, **kw))
      for a, b in zip(got, pipeline.train_batches(mem, process_index=p, **kw), strict=True):
        _assert_same(a, b)
      assert got[0]['x'].shape[0] == 8 // process_count


def test_supervised_streaming_catalog_equals_in_memory(tmp_path, monkeypatch):
  config = {**_config(str(tmp_path / 'data'), False), 'batch_size': 8, 'eval_batch_size': 8,
            'num_steps': 6, 'dataset': dict(name='mnist', data_dir=str(tmp_path / 'data'))}
  results, params = {}, _record_params(monkeypatch)
  with tfds.testing.mock_data(num_examples=N_MOCK):
    results[False] = supervised.run(config=config, workdir=str(tmp_path / 'off'))
    monkeypatch.setattr(catalog, 'read', lambda *a, **k: pytest.fail('materialised a split'))
    results[True] = supervised.run(config={**config, 'streaming': True},
                                   workdir=str(tmp_path / 'on'))
  assert sorted(params) == [False, True]
  jax.tree.map(np.testing.assert_array_equal, params[False], params[True])
  assert results[False] == results[True]
  assert results[True]['steps'] == 6 and results[True]['num_eval'] == N_MOCK
