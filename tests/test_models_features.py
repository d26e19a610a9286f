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
  assert seen == [features.CPU_BATCH_SIZE if want == 'default' else want]  # one pass, all rows


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
