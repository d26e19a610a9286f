"""The `files` dataset (w2s/data/files.py): your own jsonl / csv / parquet files, end to end
through configs/supervised.py and configs/w2s_offline.py, and one `error:` line per bad input."""
import csv
import json
import os
import random
import sys
import types

import numpy as np
import pytest

from test_hardening import REPO, _cli, _one_error
from w2s import registry
from w2s.data import base
from w2s.errors import UserError

POS, NEG = ['good', 'great', 'fine', 'lovely', 'superb'], ['bad', 'awful', 'poor', 'dull', 'weak']


def _write_jsonl(path, rows):
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  return str(path)


def _write_csv(path, rows, fields=None):
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=fields or list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  return str(path)


def _review(i, rng, pair=True):
  """A review whose sentiment words give its label (every second one positive)."""
  y = i % 2
  words = [rng.choice(POS if y else NEG) for _ in range(3)] + ['movie', 'plot', 'cast']
  rng.shuffle(words)
  row = {'text': ' '.join(words), 'label': ['neg', 'pos'][y], 'qid': f'q{i // 2}'}
  if pair:
    row['question'] = 'is it good?'
  return row


def _reviews(tmp_path, n_train=400, n_test=80, pair=True):
  rng = random.Random(0)
  train = _write_jsonl(tmp_path / 'train.jsonl', [_review(i, rng, pair) for i in range(n_train)])
  test = _write_csv(tmp_path / 'test.csv',
                    [_review(i, rng, pair) for i in range(n_train, n_train + n_test)])
  return train, test


def _tabular(i, rng):
  y = i % 2
  return {'label': y, **{f'f{j}': round(rng.gauss(1.5 * y, 1.0), 4) for j in range(4)}}


def _load(**hparams):
  return registry.build('datasets', dict(name='files', **hparams))


# --- loading: the Dataset contract -------------------------------------------------------------

def test_text_jsonl_and_csv_follow_the_dataset_contract(tmp_path):
  train, test = _reviews(tmp_path, n_train=6, n_test=4)
  unl = _write_jsonl(tmp_path / 'u.jsonl', [{'text': 'no label', 'qid': 'u1'},
                                             {'text': 'nor here', 'qid': 'u2'}])
  ds = _load(train=train, test=test, unlabelled=unl, label_names=['neg', 'pos'], group='qid')
  assert ds.input_kind == 'text' and ds.num_classes == 2 and ds.label_names == ['neg', 'pos']
  tr, te, u = ds.splits['train'], ds.splits['test'], ds.splits['unlabelled']
  assert tr['id'].dtype == np.int64 and tr['label'].dtype == np.int64
  np.testing.assert_array_equal(tr['id'], base.split_ids('train', np.arange(6)))
  np.testing.assert_array_equal(te['id'], base.split_ids('test', np.arange(4)))
  np.testing.assert_array_equal(tr['label'], [0, 1, 0, 1, 0, 1])  # 'neg' -> 0, 'pos' -> 1
  assert te['text'].dtype == object and te['text'][0] == next(csv.DictReader(open(test)))['text']
  np.testing.assert_array_equal(u['label'], [base.UNKNOWN] * 2)
  assert tr['group'][0] == tr['group'][1] != tr['group'][2]  # q0, q0, q1: stable string hashes
  assert 'text_pair' not in tr
  again = _load(train=train, test=test, unlabelled=unl, label_names=['neg', 'pos'], group='qid')
  assert again.name == ds.name and ds.name.startswith('files_')
  mapped = _load(train=train, test=test, label_names={'neg': 0, 'pos': 1, 'positive': 1})
  assert mapped.label_names == ['neg', 'pos'] and mapped.name != ds.name
  with open(test, 'a') as f:  # the name follows the files' contents (feature caches key on it)
    f.write('great great film,pos,q99,is it?\n')
  assert _load(train=train, test=test, unlabelled=unl, label_names=['neg', 'pos'],
               group='qid').name != ds.name


def test_pairs_ids_and_int_labels(tmp_path):
  rows = [{'q': f'question {i}', 'a': f'answer {i}', 'y': i % 3, 'key': 100 + i}
          for i in range(6)]
  train = _write_jsonl(tmp_path / 'train.jsonl', rows[:4])
  test = _write_csv(tmp_path / 'test.csv', rows[4:])
  ds = _load(train=train, test=test, text='q', text_pair='a', label='y', id='key')
  assert ds.num_classes == 3 and ds.label_names == ['0', '1', '2']
  np.testing.assert_array_equal(ds.splits['train']['id'], [100, 101, 102, 103])
  np.testing.assert_array_equal(ds.splits['test']['label'], [1, 2])  # csv '1', '2' -> ints
  assert list(ds.splits['test']['text_pair']) == ['answer 4', 'answer 5']


def test_vectors_from_a_column_list_a_prefix_and_a_list_column(tmp_path):
  rng = random.Random(0)
  rows = [_tabular(i, rng) for i in range(8)]
  train = _write_csv(tmp_path / 'train.csv', rows[:6])
  test = _write_jsonl(tmp_path / 'test.jsonl', rows[6:])
  by_list = _load(train=train, test=test, features=['f0', 'f1', 'f2', 'f3'])
  by_prefix = _load(train=train, test=test, features='f*')
  x = by_list.splits['train']['x']
  assert by_list.input_kind == 'vector' and x.dtype == np.float32 and x.shape == (6, 4)
  np.testing.assert_allclose(x[0], [rows[0][f'f{j}'] for j in range(4)], rtol=1e-6)
  np.testing.assert_array_equal(by_prefix.splits['test']['x'], by_list.splits['test']['x'])
  lists = [{'x': [r[f'f{j}'] for j in range(4)], 'label': r['label']} for r in rows]
  one = _load(train=_write_jsonl(tmp_path / 'l.jsonl', lists[:6]),
              test=_write_jsonl(tmp_path / 'lt.jsonl', lists[6:]), features='x')
  np.testing.assert_array_equal(one.splits['train']['x'], x)


def test_parquet_path_dir_and_a_missing_pyarrow(tmp_path, monkeypatch):
  pq = pytest.importorskip('pyarrow.parquet')
  import pyarrow as pa
  rng = random.Random(1)
  data = tmp_path / 'data'
  data.mkdir()
  for split, n in (('train', 6), ('validation', 2), ('test', 3)):
    rows = [_review(i, rng, pair=False) for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows), data / f'{split}.parquet')
  ds = _load(path=str(data), label_names=['neg', 'pos'])
  assert {s: len(e['id']) for s, e in ds.splits.items()} == {'train': 6, 'validation': 2,
                                                             'test': 3}
  monkeypatch.setitem(sys.modules, 'pyarrow.parquet', None)  # `import pyarrow.parquet` fails
  with pytest.raises(UserError, match=r'train.parquet is parquet, which needs pyarrow: `pip '):
    _load(path=str(data), label_names=['neg', 'pos'])


class _FakeHfSplit(list):
  features = {'label': types.SimpleNamespace(names=['neg', 'pos'])}


def test_hugging_face_datasets_saved_to_disk(tmp_path, monkeypatch):
  """Through the real library when it is installed, else through a stand-in with its API."""
  rows = [{'text': f'review {i}', 'label': i % 2} for i in range(10)]
  try:
    import datasets
    datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows[:8]), test=datasets.Dataset.from_list(rows[8:]),
    ).cast_column('label', datasets.ClassLabel(names=['neg', 'pos'])).save_to_disk(tmp_path / 'hf')
  except ImportError:
    fake = types.ModuleType('datasets')
    fake.load_from_disk = lambda p: {'train': _FakeHfSplit(rows[:8]),
                                     'test': _FakeHfSplit(rows[8:])}
    monkeypatch.setitem(sys.modules, 'datasets', fake)
    (tmp_path / 'hf').mkdir()
  ds = _load(hf=str(tmp_path / 'hf'))
  assert ds.label_names == ['neg', 'pos'] and list(ds.splits) == ['train', 'test']
  assert list(ds.splits['test']['text']) == ['review 8', 'review 9']
  np.testing.assert_array_equal(ds.splits['train']['label'], [0, 1] * 4)
  with pytest.raises(UserError, match=r"has no split 'dev' \(for test=\); it has \['test', "):
    _load(hf=str(tmp_path / 'hf'), test='dev')
  monkeypatch.setitem(sys.modules, 'datasets', None)
  with pytest.raises(UserError, match='needs the Hugging Face `datasets` library: `pip install'):
    _load(hf='imdb')


@pytest.mark.parametrize('content, hparams, message', [
    ('\ufefftext,label\nhi,1\nyo,0,extra\n', {}, r"a.csv: row 3: more cells than the header's 2"),
    ('f0,f1,label\n1,2,0\n3,abc,1\n', dict(features='f*'),
     r"a.csv: row 3: feature column 'f1' holds 'abc', not a finite number"),
    ('{"x": [1, 2], "label": 0}\n{"x": [3], "label": 1}\n', dict(features='x'),
     r'a.jsonl: row 2: 1 feature values, but the rows before it have 2'),
    ('{"text": 5, "label": 0}\n', {},
     r"a.jsonl: row 1: column 'text' \(text=\) should be a string"),
    ('{"text": "a", "label": 0, "k": -3}\n', dict(id='k'),
     r"a.jsonl: row 1: id -3 in column 'k' is not an int in \[0, 2147483648\)"),
    ('{"text": "a", "label": 0}\n', dict(label_names={'a': 1}),
     r"label_names=\{'a': 1\} must map strings to the classes 0..C-1"),
    ('{"text": "a", "label": 0}\n', dict(features='*'), r"features='\*' must be a column"),
])
def test_bad_values_name_the_file_row_and_option(tmp_path, content, hparams, message):
  name = 'a.csv' if content.lstrip('\ufeff')[0] != '{' else 'a.jsonl'
  (tmp_path / name).write_text(content, encoding='utf-8')
  with pytest.raises(UserError, match=message):
    _load(train=str(tmp_path / name), test=str(tmp_path / name), **hparams)


def test_a_file_of_another_format_is_refused(tmp_path):
  (tmp_path / 'x.txt').write_text('hi')
  (tmp_path / 'a.jsonl').write_text('{"text": "a", "label": 0}\n')
  with pytest.raises(UserError, match=r"test='.*x.txt' is not a data file; give a file ending in "
                                      r'.jsonl, .jsonl.gz, .csv'):
    _load(train=str(tmp_path / 'a.jsonl'), test=str(tmp_path / 'x.txt'))


# --- end to end through the configs -------------------------------------------------------------

def _dataset_flag(**hparams) -> str:
  return '--config.dataset=' + repr(dict(name='files', **hparams))


def _run(config_arg, workdir, *flags):
  return _cli(f'--config={os.path.join(REPO, "configs", config_arg)}', f'--workdir={workdir}',
              *flags)


def test_supervised_on_text_pairs_and_on_a_table(tmp_path):
  train, test = _reviews(tmp_path)
  out = _run('supervised.py:runlocal,model=bow', tmp_path / 'text', _dataset_flag(
      train=train, test=test, text_pair='question', label_names=['neg', 'pos'], group='qid'))
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.load(open(tmp_path / 'text' / 'results.json'))['accuracy'] > 0.75
  rng = random.Random(0)
  rows = [_tabular(i, rng) for i in range(300)]
  table = (_write_csv(tmp_path / 't_train.csv', rows[:240]),
           _write_csv(tmp_path / 't_test.csv', rows[240:]))
  out = _run('supervised.py:runlocal', tmp_path / 'table',
             _dataset_flag(train=table[0], test=table[1], features='f*'))
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.load(open(tmp_path / 'table' / 'results.json'))
  assert results['num_eval'] == 60 and results['accuracy'] > 0.75


@pytest.mark.slow
def test_weak_to_strong_on_your_files(tmp_path):
  train, test = _reviews(tmp_path)
  out = _run('w2s_offline.py:runlocal,seeds=1', tmp_path / 'wd', _dataset_flag(
      train=train, test=test, text_pair='question', label_names=['neg', 'pos'], group='qid'))
  assert out.returncode == 0, out.stderr[-3000:]
  seed = json.load(open(tmp_path / 'wd' / 'results.json'))['per_seed'][0]
  assert seed['n_test'] == 80 and seed['n_weak_train'] == 128
  for loss in ('xent', 'logconf'):  # runlocal trains a few steps: no accuracy to expect
    assert all(0 <= seed[loss][k] <= 1 for k in ('acc_weak', 'acc_student', 'acc_ceiling'))
  assert {'weak', 'ceiling', 'student_xent', 'student_logconf'} == set(seed['stages'])


# --- bad input: one error line at --dry_run ------------------------------------------------------

def _bad_files(tmp_path, case):
  """(dataset hparams, words the error line must hold) of one bad-input case."""
  train, test = _reviews(tmp_path, n_train=10, n_test=4)
  ok = dict(train=train, test=test, label_names=['neg', 'pos'])
  lines = open(train).read().splitlines()

  def edit(i, line):
    lines[i] = line
    with open(train, 'w') as f:
      f.write('\n'.join(lines) + '\n')

  if case == 'missing file':
    return {**ok, 'train': str(tmp_path / 'nope.jsonl')}, ['nope.jsonl', 'no such file', 'train=']
  if case == 'missing column':
    return {**ok, 'label': 'stars'}, ['train.jsonl: row 1', "no column 'stars'", 'label=']
  if case == 'label outside label_names':
    edit(4, json.dumps({'text': 'meh', 'label': 'neutral'}))
    return ok, ['train.jsonl: row 5', "label 'neutral'", "['neg', 'pos']", 'label_names=']
  if case == 'int label outside the classes':
    with open(test, 'a') as f:
      f.write('so so,2,q9,x\n')
    return {**ok, 'label_names': {'neg': 0, 'pos': 1}}, ['test.csv: row 6', 'label 2',
                                                          'outside the classes 0..1']
  if case == 'string labels, no label_names':
    return {**ok, 'label_names': None}, ["holds string labels ('neg', 'pos')",
                                         "label_names=['neg', 'pos']"]
  if case == 'empty split':
    open(test, 'w').write('text,label\n')
    return ok, ['test.csv: no rows', 'test split is empty']
  if case == 'duplicate ids':
    for i, line in enumerate(list(lines)):
      edit(i, json.dumps({**json.loads(line), 'key': i % 9}))
    return {**ok, 'test': train, 'id': 'key'}, ['id 0 appears more than once',
                                                'train.jsonl: row 1 (train split)',
                                                'train.jsonl: row 10 (train split)']
  if case == 'malformed jsonl line':
    edit(2, '{"text": "cut off')
    return ok, ['train.jsonl: row 3', 'not valid JSON']
  if case == 'mixed text / text pair rows':
    edit(3, json.dumps({'text': 'no question here', 'label': 'pos'}))
    return {**ok, 'text_pair': 'question'}, ['train.jsonl: row 4', "column 'question'",
                                             'the 3 rows before it have one', 'text_pair=']
  raise ValueError(case)


BAD = ['missing file', 'missing column', 'label outside label_names',
       'int label outside the classes', 'string labels, no label_names', 'empty split',
       'duplicate ids', 'malformed jsonl line', 'mixed text / text pair rows']


@pytest.mark.parametrize('case', BAD)
def test_bad_input_is_one_error_line_at_dry_run(tmp_path, case):
  hparams, words = _bad_files(tmp_path, case)
  # the weak-to-strong protocol's check loads the dataset too: every other case goes through it
  config = 'w2s_offline.py:runlocal' if BAD.index(case) % 2 else 'supervised.py:runlocal'
  out = _cli(f'--config={os.path.join(REPO, "configs", config)}', '--dry_run',
             _dataset_flag(**{k: v for k, v in hparams.items() if v is not None}))
  _one_error(out, *words)
  assert out.stdout == ''


def test_a_generation_task_has_no_classes_and_keeps_its_answers(tmp_path):
  """label=None + strings=('answer',): a GSM8K-style task for the generative protocols (every
  row class 0, the answer kept as text, a missing answer one error naming the row)."""
  rows = [{'question': f'what is {i} plus 1?', 'answer': f'it is {i + 1}'} for i in range(5)]
  for split in ('train', 'test'):
    with open(tmp_path / f'{split}.jsonl', 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in rows)
  ds = registry.get('datasets', 'files')(path=str(tmp_path), text='question', label=None,
                                          strings=('answer',))
  train = ds.splits['train']
  assert ds.num_classes == 1 and (train['label'] == 0).all()
  assert list(train['answer']) == [r['answer'] for r in rows]
  assert list(train['text']) == [r['question'] for r in rows]
  with open(tmp_path / 'test.jsonl', 'a') as f:
    f.write(json.dumps({'question': 'no answer here'}) + '\n')
  with pytest.raises(UserError, match=r"test.jsonl: (line|row) 6.*'answer'"):
    registry.get('datasets', 'files')(path=str(tmp_path), text='question', label=None,
                                      strings=('answer',))
