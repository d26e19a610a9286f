"""Datasets from user-downloaded files (sciq, amazon_polarity, anthropic_hh): formats and checks."""
import gzip
import json
import os
import sys

import numpy as np
import pytest

from w2s import registry
from w2s.data import sciq
from w2s.errors import UserError


def _write_jsonl(path, rows, gz=False):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with (gzip.open if gz else open)(path, 'wt') as f:
    for r in rows:
      f.write(json.dumps(r) + '\n')


def _question(i):
  return dict(question=f'What is {i}?', correct_answer=f'right{i}', distractor1=f'wrong{i}a',
              distractor2=f'wrong{i}b', distractor3=f'wrong{i}c', support='ignored')


def _review(i, label=None):
  return dict(title=f'title {i}', content=f'content {i}', label=i % 2 if label is None else label)


@pytest.fixture
def data_dir(tmp_path):
  return str(tmp_path / 'tfds')


def _load(name, path, data_dir, **hparams):
  return registry.build('datasets', dict(name=name, path=str(path), **hparams), data_dir=data_dir)


def test_sciq_pairs_one_correct_one_distractor(tmp_path, data_dir):
  _write_jsonl(tmp_path / 'sciq/train.jsonl', [_question(i) for i in range(20)])
  _write_jsonl(tmp_path / 'sciq/test.jsonl', [_question(i) for i in range(20, 25)])
  ds = _load('sciq', tmp_path / 'sciq', data_dir)
  ex = ds.splits['train']
  assert len(ex['id']) == 40 and ex['label'].sum() == 20
  for g in np.unique(ex['group']):
    rows = np.flatnonzero(ex['group'] == g)
    q = (g // 4)  # group = id of candidate 0 = row * 4
    texts = dict(zip(ex['label'][rows], ex['text'][rows]))
    assert texts[1] == f'Q: What is {q}? A: right{q}'
    assert texts[0].startswith(f'Q: What is {q}? A: wrong{q}')
  assert len(ds.splits['test']['id']) == 10
  again = _load('sciq', tmp_path / 'sciq', data_dir)
  np.testing.assert_array_equal(again.splits['train']['text'], ex['text'])  # seeded
  other = _load('sciq', tmp_path / 'sciq', data_dir, seed=1)
  assert list(other.splits['train']['text']) != list(ex['text'])
  assert len(_load('sciq', tmp_path / 'sciq', data_dir, mode='sample').splits['train']['id']) == 20


def test_amazon_polarity_jsonl_and_parquet(tmp_path, data_dir):
  _write_jsonl(tmp_path / 'amz/train.jsonl', [_review(i) for i in range(8)])
  _write_jsonl(tmp_path / 'amz/test.jsonl', [_review(i) for i in range(3)])
  ds = _load('amazon_polarity', tmp_path / 'amz', data_dir)
  ex = ds.splits['train']
  assert list(ex['text'][:2]) == ['title 0 content 0', 'title 1 content 1']
  assert ex['label'].tolist() == [0, 1] * 4 and ex['id'].tolist() == list(range(8))
  import pyarrow as pa
  import pyarrow.parquet as pq
  os.makedirs(tmp_path / 'pq/data')
  for split, n in (('train', 6), ('test', 2)):
    pq.write_table(pa.Table.from_pylist([_review(i) for i in range(n)]),
                   tmp_path / f'pq/data/{split}-00000-of-00001.parquet')
  ds = _load('amazon_polarity', tmp_path / 'pq', data_dir)
  assert len(ds.splits['train']['id']) == 6 and ds.splits['test']['text'][1] == 'title 1 content 1'


def test_anthropic_hh_pairs(tmp_path, data_dir):
  pairs = [dict(chosen=f'good {i}', rejected=f'bad {i}') for i in range(5)]
  _write_jsonl(tmp_path / 'hh/helpful-base/train.jsonl.gz', pairs, gz=True)
  _write_jsonl(tmp_path / 'hh/helpful-base/test.jsonl.gz', pairs[:2], gz=True)
  ex = _load('anthropic_hh', tmp_path / 'hh', data_dir).splits['train']
  assert ex['text'].tolist()[:4] == ['good 0', 'bad 0', 'good 1', 'bad 1']
  assert ex['label'].tolist() == [1, 0] * 5 and len(np.unique(ex['group'])) == 5
  sample = _load('anthropic_hh', tmp_path / 'hh', data_dir, mode='sample').splits['train']
  assert len(sample['id']) == 5
  assert all(t.startswith('good' if y else 'bad') for t, y in zip(sample['text'], sample['label']))


HH_ROWS = [  # HH's form: full transcripts sharing all but the final assistant turn
    dict(chosen='\n\nHuman: hi\n\nAssistant: hello!', rejected='\n\nHuman: hi\n\nAssistant: go away'),
    dict(chosen='\n\nHuman: 2+2?\n\nAssistant: 5\n\nHuman: sure?\n\nAssistant: no, 4',
         rejected='\n\nHuman: 2+2?\n\nAssistant: 5\n\nHuman: sure?\n\nAssistant: yes'),
    dict(chosen='\n\nHuman: a\n\nAssistant: x', rejected='\n\nHuman: b\n\nAssistant: y'),
    dict(chosen='\n\nHuman: same\n\nAssistant: ok', rejected='\n\nHuman: same\n\nAssistant: ok'),
    dict(chosen='\n\nHuman: no reply', rejected='\n\nHuman: no reply'),
    dict(chosen='\n\nHuman: tea?\n\nAssistant: Yes.', rejected='\n\nHuman: tea?\n\nAssistant: No.'),
]


def test_anthropic_hh_prompt_pairs_split_the_final_turn(tmp_path, data_dir, capsys):
  _write_jsonl(tmp_path / 'hh/helpful-base/train.jsonl', HH_ROWS)
  _write_jsonl(tmp_path / 'hh/helpful-base/test.jsonl', HH_ROWS[:2])
  ds = _load('anthropic_hh', tmp_path / 'hh', data_dir, mode='prompt_pairs', seed=3)
  ex = ds.splits['train']
  # rows 2 (prompts differ), 3 (identical replies), 4 (no assistant turn) skipped and counted
  assert ex['id'].tolist() == [0, 1, 5]
  assert ds.notes['skipped_pairs']['train'] == {'prompts_differ': 2, 'identical_responses': 1}
  assert ds.notes['skipped_pairs']['test'] == {'prompts_differ': 0, 'identical_responses': 0}
  assert 'train: kept 3 of 6 pairs, skipped 2 prompts differ, 1 identical responses' in \
      capsys.readouterr().out
  assert ex['prompt'].tolist() == [
      '\n\nHuman: hi\n\nAssistant:',
      '\n\nHuman: 2+2?\n\nAssistant: 5\n\nHuman: sure?\n\nAssistant:',  # multi-turn: the last
      '\n\nHuman: tea?\n\nAssistant:']
  assert ex['chosen'].tolist() == [' hello!', ' no, 4', ' Yes.']
  rejected = [' go away', ' yes', ' No.']
  coins = [int(np.random.default_rng([3, r]).random() >= 0.5) for r in (0, 1, 5)]  # 'sample''s
  assert ex['label'].tolist() == coins
  for i, y in enumerate(coins):
    pair = (ex['response_a'][i], ex['response_b'][i])
    assert pair[y] == ex['chosen'][i] and pair[1 - y] == rejected[i]
    assert ex['prompt'][i] + ex['chosen'][i] == HH_ROWS[ex['id'][i]]['chosen']
  assert ds.num_classes == 2 and ds.splits['test']['id'].tolist() == [2 * 10**8, 2 * 10**8 + 1]
  orders = {tuple(_load('anthropic_hh', tmp_path / 'hh', data_dir, mode='prompt_pairs',
                        seed=s).splits['train']['label']) for s in range(6)}
  assert len(orders) > 1  # the order is drawn, not fixed
  _write_jsonl(tmp_path / 'bad/helpful-base/train.jsonl', HH_ROWS[2:5])
  _write_jsonl(tmp_path / 'bad/helpful-base/test.jsonl', HH_ROWS[:1])
  with pytest.raises(UserError, match=r'anthropic_hh train: none of its 3 pairs share a prompt'):
    _load('anthropic_hh', tmp_path / 'bad', data_dir, mode='prompt_pairs')
  with pytest.raises(UserError, match="mode 'pairs' is not one of"):
    _load('anthropic_hh', tmp_path / 'hh', data_dir, mode='pairs')


@pytest.mark.parametrize('bad_row, message', [
    ({'title': 't', 'label': 1}, "row 3: missing field 'content'"),
    ({'title': 't', 'content': 'c', 'label': 2}, 'row 3: unknown label label=2'),
    ({'title': 't', 'content': 7, 'label': 1}, "row 3: field 'content' should be a string"),
])
def test_malformed_rows_name_file_and_row(tmp_path, data_dir, bad_row, message):
  _write_jsonl(tmp_path / 'amz/train.jsonl', [_review(0), _review(1)])
  _write_jsonl(tmp_path / 'amz/test.jsonl', [_review(0), _review(1), bad_row])
  with pytest.raises(UserError) as e:
    _load('amazon_polarity', tmp_path / 'amz', data_dir)
  assert str(tmp_path / 'amz/test.jsonl') in str(e.value) and message in str(e.value)


def test_invalid_json_and_missing_split_are_user_errors(tmp_path, data_dir):
  _write_jsonl(tmp_path / 'sq/train.jsonl', [_question(0)])
  with pytest.raises(UserError, match='no test file'):
    _load('sciq', tmp_path / 'sq', data_dir)
  with open(tmp_path / 'sq/test.jsonl', 'w') as f:
    f.write(json.dumps(_question(1)) + '\n{"question": \n')
  with pytest.raises(UserError, match=r'test.jsonl: row 2: not valid JSON'):
    _load('sciq', tmp_path / 'sq', data_dir)
  with pytest.raises(UserError, match='not a directory'):
    _load('sciq', tmp_path / 'nowhere', data_dir)


def test_parquet_without_pyarrow_is_a_user_error(tmp_path, data_dir, monkeypatch):
  from w2s.data import local_files
  path = tmp_path / 'x.parquet'
  path.write_bytes(b'not really parquet')
  monkeypatch.setitem(sys.modules, 'pyarrow', None)
  monkeypatch.setitem(sys.modules, 'pyarrow.parquet', None)
  with pytest.raises(UserError, match='needs pyarrow'):
    list(local_files.iter_records(str(path)))
  _write_jsonl(tmp_path / 'amz/train.jsonl', [_review(0)])  # jsonl still works without it
  _write_jsonl(tmp_path / 'amz/test.jsonl', [_review(1)])
  assert len(_load('amazon_polarity', tmp_path / 'amz', data_dir).splits['test']['id']) == 1


def test_changed_files_rebuild_unchanged_files_do_not(tmp_path, data_dir, monkeypatch):
  _write_jsonl(tmp_path / 'sq/train.jsonl', [_question(i) for i in range(3)])
  _write_jsonl(tmp_path / 'sq/test.jsonl', [_question(3)])
  assert len(_load('sciq', tmp_path / 'sq', data_dir).splits['train']['id']) == 6
  orig = sciq.W2sSciq._split_generators
  calls = []
  monkeypatch.setattr(sciq.W2sSciq, '_split_generators',
                      lambda self, dl: calls.append(1) or orig(self, dl))
  _load('sciq', tmp_path / 'sq', data_dir)
  assert not calls
  _write_jsonl(tmp_path / 'sq/train.jsonl', [_question(i) for i in range(4)])
  assert len(_load('sciq', tmp_path / 'sq', data_dir).splits['train']['id']) == 8
  assert calls == [1]


@pytest.mark.parametrize('content, what', [
    ('zero_jsonl', '0 bytes'), ('blank_jsonl', 'no rows'), ('zero_gz', '0 bytes'),
    ('zero_parquet', '0 bytes'), ('header_only_parquet', 'no rows'),
    ('bad_parquet', 'not a readable parquet'),
])
def test_empty_or_unreadable_file_is_one_user_error_naming_it(tmp_path, data_dir, content, what):
  _write_jsonl(tmp_path / 'amz/train.jsonl', [_review(0), _review(1)])
  name = {'zero_gz': 'test.jsonl.gz'}.get(content, 'test.parquet' if 'parquet' in content
                                          else 'test.jsonl')
  path = tmp_path / 'amz' / name
  if content == 'blank_jsonl':
    path.write_text('\n  \n')
  elif content == 'header_only_parquet':
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([], schema=pa.schema(
        [('title', pa.string()), ('content', pa.string()), ('label', pa.int64())])), path)
  elif content == 'bad_parquet':
    path.write_bytes(b'PAR1 this is not parquet')
  else:
    path.write_bytes(b'')
  with pytest.raises(UserError) as e:
    _load('amazon_polarity', tmp_path / 'amz', data_dir)
  msg = str(e.value)
  assert str(path) in msg and what in msg and 're-download it' in msg and '\n' not in msg


def test_empty_optional_validation_file_says_it_can_be_deleted(tmp_path, data_dir):
  _write_jsonl(tmp_path / 'sq/train.jsonl', [_question(0)])
  _write_jsonl(tmp_path / 'sq/test.jsonl', [_question(1)])
  (tmp_path / 'sq/validation.jsonl').write_bytes(b'')
  with pytest.raises(UserError, match=r'validation.jsonl is empty .* or delete it'):
    _load('sciq', tmp_path / 'sq', data_dir)
