"""Frozen-feature extraction: correct features in id order, served from the disk cache."""
import logging
import os
import signal

import jax
import numpy as np
import pytest

from w2s import assets
from w2s import preemption
from w2s.errors import UserError
from w2s.models import bert, features, hf_import, resnet

WORDS = 'the a film was good bad dull lively plot acting music long short story ending'.split()


def _texts(n, seed=0):
  rs = np.random.RandomState(seed)
  return np.array([' '.join(rs.choice(WORDS, rs.randint(1, 30))) for _ in range(n)], dtype=object)


@pytest.fixture(scope='module')
def tiny():
  model = bert.create(num_classes=2, size='tiny')  # random weights, real MiniLM tokenizer
  tok = assets.minilm_dir()
  params = hf_import.init_params(model, jax.random.key(0),
                                 features.tokenize(['a b'], tok, max_length=64))
  return model, params, tok


def _counting(model, calls):
  forward = features.default_forward(model)

  def counted(params, batch):
    calls.append(batch['input_ids'].shape)
    return forward(params, batch)
  return counted


def test_batched_sorted_features_equal_one_by_one(tiny):
  model, params, tok = tiny
  texts = _texts(21)
  inputs = features.tokenize(texts, tok, max_length=64)
  calls = []
  got = features.extract(model, params, inputs, batch_size=8, forward=_counting(model, calls))
  assert len(calls) == 3 and all(shape[0] == 8 for shape in calls)
  assert all(shape[1] % 16 == 0 for shape in calls) and calls[0][1] >= calls[-1][1]  # longest first
  forward = features.default_forward(model)
  for i in (0, 20):  # one row at a time, unpadded
    n = inputs['attention_mask'][i].sum()
    want = forward(params, {k: v[i:i + 1, :n] for k, v in inputs.items()})
    np.testing.assert_allclose(got[i], want[0], atol=1e-5)


def test_second_extraction_comes_from_the_cache(tiny, tmp_path, capsys):
  model, params, tok = tiny
  texts, ids = _texts(30), np.random.RandomState(1).permutation(30) + 1000
  kw = dict(cache_dir=str(tmp_path), dataset='toy', split='train', tokenizer_dir=tok,
            max_length=64, batch_size=8, log_every_s=0.0)
  calls = []
  first = features.text_features(model, params, texts, ids, forward=_counting(model, calls), **kw)
  assert len(calls) == 4 and first.shape == (30, 64)
  assert 'ex/s' in capsys.readouterr().err  # progress line with rate and ETA
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].startswith('toy-train-')  # one chunk directory per key
  assert [f.endswith('.npz') for f in os.listdir(tmp_path / files[0])] == [True]

  perm = np.random.RandomState(2).permutation(30)
  again = features.text_features(model, params, texts[perm], ids[perm],
                                 forward=_counting(model, calls), **kw)
  assert len(calls) == 4  # no forward pass at all
  np.testing.assert_array_equal(again, first[perm])  # in the order of the ids asked for

  more_texts, more_ids = np.concatenate([texts, _texts(3, seed=5)]), np.arange(33) + 1000
  more_ids[:30] = ids
  extended = features.text_features(model, params, more_texts, more_ids,
                                    forward=_counting(model, calls), **kw)
  assert len(calls) == 5  # only the 3 new examples ran
  np.testing.assert_array_equal(extended[:30], first)
  assert len(os.listdir(tmp_path)) == 1  # the same cache, extended by a chunk (no .tmp left)
  assert sorted(f[-4:] for f in os.listdir(tmp_path / files[0])) == ['.npz', '.npz']

  features.text_features(model, params, texts, ids, forward=_counting(model, calls),
                         **dict(kw, max_length=32))
  assert len(calls) == 9  # other tokenizer settings: another cache entry
  moved = jax.tree.map(lambda a: a + 0.01, params)
  features.text_features(model, moved, texts, ids, forward=_counting(model, calls), **kw)
  assert len(calls) == 13  # other params: another cache entry


def test_image_features_and_bad_inputs(tmp_path):
  model = resnet.create(num_classes=3, size='tiny', image_shape=(8, 8, 1))
  x = np.random.RandomState(0).rand(10, 64).astype(np.float32)
  params = hf_import.init_params(model, jax.random.key(0), {'x': x})
  key = dict(features.model_key(model, params), dataset='digits', split='test')
  compute = lambda rows: features.extract(model, params, {'x': x[rows]}, batch_size=4)
  got = features.cached(np.arange(10), cache_dir=str(tmp_path), key=key, compute=compute)
  np.testing.assert_allclose(got, features.default_forward(model)(params, {'x': x}), atol=1e-5)
  with pytest.raises(UserError, match='duplicate'):
    features.cached(np.zeros(3), cache_dir=None, key=key, compute=compute)
  with pytest.raises(UserError, match='tokenizer'):
    features.text_features(bert.create(num_classes=2, size='tiny'), None, ['a'], [0],
                           cache_dir=None, dataset='d', split='s')


def _doubling(calls, preempt_after=None):
  """compute(rows) over x = ids as floats through `extract`, counting rows per call; optionally
  delivers SIGTERM (to the preemption flag) during call number `preempt_after`."""
  def compute(ids, rows):
    calls.append(len(rows))
    if len(calls) == preempt_after:
      preemption._handler(signal.SIGTERM, None)
    x = np.stack([ids[rows], -ids[rows]], axis=1).astype(np.float32)
    return features.extract(None, None, {'x': x}, batch_size=2, desc='[strong features] toy',
                            forward=lambda params, batch: batch['x'] * 2, log_every_s=0.0)
  return compute


def _want(ids):
  return np.stack([ids, -ids], axis=1).astype(np.float32) * 2


def test_preempted_extraction_keeps_finished_chunks_and_resumes(tmp_path, capsys):
  ids, key = np.arange(10) + 100, dict(dataset='toy', split='all')
  calls = []
  compute = _doubling(calls, preempt_after=1)
  try:
    with pytest.raises(preemption.Preempted) as e:
      features.cached(ids, cache_dir=str(tmp_path), key=key, chunk_rows=4,
                      compute=lambda rows: compute(ids, rows))
  finally:
    preemption.reset()
  assert calls == [4]  # stopped after the first chunk was saved
  assert 'feature extraction strong features toy: SIGTERM' in str(e.value)
  assert '4/10 rows are cached' in str(e.value)
  err = capsys.readouterr().err
  assert '[strong features toy] 4/10 (40%)' in err and '[[' not in err  # one count over chunks

  got = features.cached(ids, cache_dir=str(tmp_path), key=key, chunk_rows=4,
                        compute=lambda rows: compute(ids, rows))
  assert calls == [4, 4, 2]  # the rerun computed only the 6 missing rows
  np.testing.assert_array_equal(got, _want(ids))
  assert '[strong features toy] 6/6 (100%)' in capsys.readouterr().err
  features.cached(ids, cache_dir=str(tmp_path), key=key, compute=lambda rows: compute(ids, rows))
  assert calls == [4, 4, 2]  # complete: no forward pass


@pytest.mark.parametrize('damage', ['truncate', 'empty', 'garbage'])
def test_unreadable_chunk_is_recomputed_with_one_warning(tmp_path, caplog, damage):
  ids, key = np.arange(10) + 100, dict(dataset='toy', split='all')
  calls = []
  compute = lambda rows: _doubling(calls)(ids, rows)
  features.cached(ids, cache_dir=str(tmp_path), key=key, chunk_rows=4, compute=compute)
  folder = features.cache_path(str(tmp_path), key)
  chunks = sorted(os.listdir(folder))
  assert calls == [4, 4, 2] and len(chunks) == 3
  bad = os.path.join(folder, chunks[0])
  data = open(bad, 'rb').read()
  with open(bad, 'wb') as f:
    f.write({'truncate': data[:len(data) // 2], 'empty': b'', 'garbage': b'x' * 100}[damage])
  with caplog.at_level(logging.WARNING):
    got = features.cached(ids, cache_dir=str(tmp_path), key=key, chunk_rows=4, compute=compute)
  np.testing.assert_array_equal(got, _want(ids))
  assert len(calls) == 4 and calls[-1] in (2, 4)  # only the damaged chunk's rows again
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1 and bad in warnings[0] and 'computed again' in warnings[0]
  assert '\n' not in warnings[0]
  again = features.cached(ids, cache_dir=str(tmp_path), key=key, chunk_rows=4, compute=compute)
  assert len(calls) == 4  # the recomputed chunk was saved
  np.testing.assert_array_equal(again, got)


def test_many_missing_rows_use_bigger_chunks(tmp_path, monkeypatch):
  monkeypatch.setattr(features, 'MAX_CHUNKS', 3)
  ids, calls = np.arange(10), []
  features.cached(ids, cache_dir=str(tmp_path), key={}, chunk_rows=2,
                  compute=lambda rows: _doubling(calls)(ids, rows))
  assert calls == [4, 4, 2]  # ceil(10 / 3) rows per chunk, not 2


def test_chunks_share_one_jitted_forward(tmp_path, monkeypatch):
  model = resnet.create(num_classes=3, size='tiny', image_shape=(8, 8, 1))
  x = np.random.RandomState(0).rand(10, 64).astype(np.float32)
  params = hf_import.init_params(model, jax.random.key(0), {'x': x})
  built = []
  make = features.default_forward
  monkeypatch.setattr(features, 'default_forward', lambda m: built.append(m) or make(m))
  compute = lambda rows: features.extract(model, params, {'x': x[rows]}, batch_size=4)
  got = features.cached(np.arange(10), cache_dir=str(tmp_path), key={}, compute=compute,
                        chunk_rows=4)
  assert len(built) == 1  # not one jit (and its compilations) per chunk
  np.testing.assert_allclose(got, make(model)(params, {'x': x}), rtol=1e-5, atol=1e-5)


def test_batch_size_changes_features_only_by_float_rounding(tiny):
  """The cache is keyed by content, not batch size: any batch (so any padding) gives the same
  features up to float rounding, and the backend's default batch is one of them."""
  model, params, tok = tiny
  inputs = features.tokenize(_texts(70, seed=3), tok, max_length=64)
  forward = features.default_forward(model)
  got = {b: features.extract(model, params, inputs, batch_size=b, forward=forward)
         for b in (1, 8, 32, 256)}
  got[None] = features.extract(model, params, inputs, forward=forward)  # the default
  pads = {b: {batch['input_ids'].shape[1] for _, batch in features._batches(inputs, b, 16)}
          for b in (1, 256)}
  assert len(pads[1]) > 1 and pads[256] == {max(pads[1])}  # rows really padded differently
  for b, feats in got.items():
    np.testing.assert_allclose(feats, got[1], rtol=1e-5, atol=1e-5 * np.abs(got[1]).max(),
                               err_msg=f'batch {b}')


def test_default_batch_size_follows_the_backend():
  assert features.default_batch_size('cpu') == features.CPU_BATCH_SIZE < 256
  assert features.default_batch_size('gpu') == features.default_batch_size('tpu') == 256
  assert features.default_batch_size('gpu', accelerator=512) == 512
  assert features.default_batch_size() == features.CPU_BATCH_SIZE  # the tests run on a CPU
  shapes = []
  features.extract(None, None, {'x': np.ones((features.CPU_BATCH_SIZE + 3, 2), np.float32)},
                   forward=lambda p, b: shapes.append(b['x'].shape) or b['x'], log_every_s=1e9)
  assert shapes == [(features.CPU_BATCH_SIZE, 2)] * 2


def _toy_text_dataset(n=24):
  from w2s.data import base
  texts = _texts(n, seed=4)
  split = lambda lo, hi: {'id': np.arange(lo, hi), 'label': np.arange(lo, hi) % 2,
                          'text': texts[lo:hi]}
  return base.check(base.Dataset('toy_text', 2, ['a', 'b'], 'text',
                                 {'train': split(0, n - 8), 'test': split(n - 8, n)}))


@pytest.mark.parametrize('section, want', [({}, 'default'), ({'feature_batch_size': 8}, 8)])
@pytest.mark.usefixtures('own_feature_cache')  # batch size is no part of the key: both would share
def test_frozen_learner_extracts_at_the_chosen_batch(tmp_path, monkeypatch, section, want):
  from w2s.protocols import learners
  seen = []
  extract = features.extract
  monkeypatch.setattr(features, 'extract',
                      lambda *a, **kw: seen.append(kw['batch_size']) or extract(*a, **kw))
  role = dict(model=dict(name='bert', size='tiny'), frozen=True, loss=dict(name='xent'),
              train=dict(optimizer=dict(name='adam', learning_rate=1e-3), batch_size=8),
              **section)
  opts = learners.RoleOptions.from_section(
      'strong', role, tokenizer=dict(tokenizer='minilm', max_length=32))
  assert 'feature_batch_size' not in opts.spec()  # no stage key changes with it
  ds = _toy_text_dataset()
  learner = learners.make(opts, dataset=ds, eval_batch_size=64, cache_dir=str(tmp_path))
  raw = ds.splits['test']
  x = learner.examples(raw, learners.soft_labels(raw, 2))['x']
  assert x.shape == (8, 64)
  assert seen == [features.CPU_BATCH_SIZE if want == 'default' else want]  # one pass, its rows


@pytest.mark.parametrize('section, match', [
    (dict(frozen=True, feature_batch_size=0), 'feature_batch_size=0 must be > 0'),
    (dict(frozen=True, feature_batch_size='big'), 'must be a number'),
    (dict(feature_batch_size=32), 'only read with frozen=True'),
    (dict(frozen=True, feature_batchsize=32), "did you mean 'feature_batch_size'"),
])
def test_feature_batch_size_is_checked(section, match):
  from w2s.protocols import learners
  role = dict(model=dict(name='bert', size='tiny'), loss=dict(name='xent'),
              train=dict(optimizer=dict(name='adam', learning_rate=1e-3), batch_size=8), **section)
  with pytest.raises(UserError, match=match):
    learners.RoleOptions.from_section('strong', role,
                                      tokenizer=dict(tokenizer='minilm', max_length=32))


def _frozen_learner(dataset, workdir):
  from w2s.protocols import learners
  role = dict(model=dict(name='bert', size='tiny'), frozen=True, loss=dict(name='xent'),
              train=dict(optimizer=dict(name='adam', learning_rate=1e-3), batch_size=8))
  opts = learners.RoleOptions.from_section(
      'strong', role, tokenizer=dict(tokenizer='minilm', max_length=32))
  return learners.make(opts, dataset=dataset, eval_batch_size=64,
                       cache_dir=os.path.join(workdir, 'features'))


def _counting_rows(monkeypatch) -> list:
  """Wraps `features.extract` (every forward pass of a learner goes through it): rows per call."""
  rows, extract = [], features.extract
  monkeypatch.setattr(features, 'extract', lambda model, params, inputs, **kw: rows.append(
      len(next(iter(inputs.values())))) or extract(model, params, inputs, **kw))
  return rows


def _x(learner, raw):
  return learner.examples(raw, np.eye(2, dtype=np.float32)[raw['label']])['x']


def test_a_second_workdir_reuses_the_first_ones_features(tmp_path, monkeypatch, own_feature_cache):
  ds = _toy_text_dataset()
  rows = _counting_rows(monkeypatch)
  test, train = ds.splits['test'], ds.splits['train']
  first = _x(_frozen_learner(ds, tmp_path / 'a'), test)
  assert rows == [8]  # only the rows asked for, not the dataset's 24
  again = _x(_frozen_learner(ds, tmp_path / 'b'), test)  # another workdir, another process alike
  assert rows == [8]  # no forward pass
  np.testing.assert_array_equal(again, first)
  assert not os.path.exists(tmp_path / 'a' / 'features')  # the user cache holds them
  assert len(os.listdir(own_feature_cache)) == 1  # one key, the same for both workdirs
  bigger = {k: v[:12] for k, v in train.items()}
  _x(_frozen_learner(ds, tmp_path / 'b'), {k: np.concatenate([v, test[k]]) for k, v in
                                           bigger.items()})
  assert rows == [8, 12]  # a larger run extracts only the rows no run has cached


def test_workdir_local_mode_and_its_rows_move_to_the_user_cache(tmp_path, monkeypatch):
  ds = _toy_text_dataset()
  rows = _counting_rows(monkeypatch)
  test = ds.splits['test']
  monkeypatch.setenv('W2S_CACHE_DIR', '')  # workdir-local: everything in the workdir
  local = _x(_frozen_learner(ds, tmp_path / 'old'), test)
  assert rows == [8] and len(os.listdir(tmp_path / 'old' / 'features')) == 1
  user = tmp_path / 'user'
  monkeypatch.setenv('W2S_CACHE_DIR', str(user))
  got = _x(_frozen_learner(ds, tmp_path / 'old'), test)  # its workdir's rows are read, not computed
  assert rows == [8]
  np.testing.assert_array_equal(got, local)
  _x(_frozen_learner(ds, tmp_path / 'new'), test)  # and were copied into the user cache
  assert rows == [8] and len(os.listdir(user)) == 1


def test_cache_dirs_precedence(tmp_path, monkeypatch, caplog):
  from w2s.models import feature_store
  wd = str(tmp_path / 'run' / 'features')
  monkeypatch.setenv('W2S_CACHE_DIR', str(tmp_path / 'shared'))
  assert features.cache_dirs(wd) == (str(tmp_path / 'shared'), ())  # no workdir cache to read
  os.makedirs(wd)
  assert features.cache_dirs(wd) == (str(tmp_path / 'shared'), (wd,))
  os.symlink(tmp_path / 'shared', tmp_path / 'link')
  assert features.cache_dirs(str(tmp_path / 'link')) == (str(tmp_path / 'shared'), ())
  monkeypatch.setenv('W2S_CACHE_DIR', ' ')
  assert features.cache_dirs(wd) == (wd, ())  # empty: workdir-local
  monkeypatch.delenv('W2S_CACHE_DIR')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert features.cache_dirs(wd)[0] == str(tmp_path / 'xdg' / 'w2s' / 'features')
  monkeypatch.delenv('XDG_CACHE_HOME')
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  assert features.user_cache_dir() == str(tmp_path / 'home' / '.cache' / 'w2s' / 'features')
  # unwritable: the default falls back to the workdir with one warning, an explicit one fails
  (tmp_path / 'file').write_text('not a directory')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'file'))
  feature_store._WARNED.clear()
  with caplog.at_level(logging.WARNING):
    assert features.cache_dirs(wd) == (wd, ()) and features.cache_dirs(wd) == (wd, ())
  warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warned) == 1 and 'cannot be written' in warned[0] and wd in warned[0]
  monkeypatch.setenv('W2S_CACHE_DIR', str(tmp_path / 'file' / 'features'))
  with pytest.raises(UserError, match='W2S_CACHE_DIR=.* is not a writable directory'):
    features.cache_dirs(wd)


def test_runlocal_extracts_only_its_rows_and_a_second_workdir_none(tmp_path, monkeypatch,
                                                                   own_feature_cache):
  """The main job's runlocal (tiny random BERT, 1 seed): the strong role's features of B, val and
  test only (not the 12,808 reviews); then the strong learner of a second workdir reads every
  row of those splits with no forward pass."""
  import importlib.util
  from w2s import train
  from w2s.data import splits as splits_lib
  from w2s.models import feature_store
  from w2s.protocols import learners, weak_to_strong
  spec = importlib.util.spec_from_file_location('w2s_offline', os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'w2s_offline.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config('runlocal,seeds=1,losses=xent')
  rows = _counting_rows(monkeypatch)
  first = train.train_and_evaluate(config, str(tmp_path / 'a'))['per_seed'][0]
  split_rows = first['n_strong_train'] + first['n_val'] + first['n_test']
  assert sum(rows) == split_rows == 256 + 128 + 256
  (key_dir,) = os.listdir(own_feature_cache)
  ids, _ = feature_store.load(os.path.join(own_feature_cache, key_dir))
  assert len(ids) == len(np.unique(ids)) == split_rows  # each row once
  assert not os.path.exists(tmp_path / 'a' / 'features')

  rows.clear()
  opts, dataset = weak_to_strong.check(config)
  strong = learners.make(opts.strong, dataset=dataset, eval_batch_size=opts.eval_batch_size,
                         cache_dir=str(tmp_path / 'b' / 'features'))
  parts = splits_lib.weak_to_strong(dataset, seed=0, **opts.splits).splits
  for name in ('strong_train', 'val', 'test'):
    x = strong.examples(parts[name], learners.soft_labels(parts[name], 2))['x']
    assert x.shape == (len(parts[name]['id']), 64)  # the tiny BERT's width
  assert rows == []  # every feature read from the first workdir's run
