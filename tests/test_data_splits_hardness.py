"""Easy-to-hard splits (Sun et al. 2024; Hase et al. 2024): hardness from a field, a text length or
the caller's scores; deterministic, order-independent, groups kept together, clear errors."""
import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from w2s.data import arithmetic
from w2s.data import base
from w2s.data import splits
from w2s.errors import UserError


def _examples(n=200, seed=0, groups=None):
  rng = np.random.default_rng(seed)
  ids = rng.permutation(10 * n)[:n].astype(np.int64)  # sparse, unordered
  words = rng.integers(1, 9, n)
  ex = {'id': ids, 'label': rng.integers(0, 2, n).astype(np.int64),
        'level': rng.integers(0, 5, n).astype(np.int64),
        'text': np.array([' '.join(['ab'] * int(w)) for w in words], dtype=object)}
  if groups:
    ex['group'] = ids // groups
  return ex


def _check_partition(ex, easy, hard):
  both = np.concatenate([easy['id'], hard['id']])
  assert sorted(both) == sorted(ex['id']) and len(np.unique(both)) == len(both)
  for part in (easy, hard):
    assert (np.diff(part['id']) > 0).all()  # sorted by id
    rows = np.searchsorted(ex['id'], part['id'], sorter=np.argsort(ex['id']))
    order = np.argsort(ex['id'])[rows]
    for k in ex:
      np.testing.assert_array_equal(part[k], ex[k][order])  # rows carried whole


def test_threshold_on_a_field():
  ex = _examples()
  easy, hard = splits.easy_to_hard(ex, by='level', threshold=1)
  _check_partition(ex, easy, hard)
  assert easy['level'].max() <= 1 < hard['level'].min()
  assert len(easy['id']) == (ex['level'] <= 1).sum()


def test_easy_fraction_is_exact_deterministic_and_order_free():
  ex = _examples()
  easy, hard = splits.easy_to_hard(ex, by='level', easy_fraction=0.3, seed=4)
  _check_partition(ex, easy, hard)
  assert len(easy['id']) == 60 and easy['level'].max() <= hard['level'].min()
  perm = np.random.default_rng(1).permutation(200)
  shuffled = base.take(ex, perm)
  easy2, _ = splits.easy_to_hard(shuffled, by='level', easy_fraction=0.3, seed=4)
  np.testing.assert_array_equal(easy2['id'], easy['id'])
  # ties at the cut are broken by hash(id, seed): another seed picks other rows of the cut level
  easy3, _ = splits.easy_to_hard(ex, by='level', easy_fraction=0.3, seed=5)
  cut = easy['level'].max()
  assert len(easy3['id']) == 60 and easy3['level'].max() == cut
  np.testing.assert_array_equal(easy3['id'][easy3['level'] < cut], easy['id'][easy['level'] < cut])
  assert set(easy3['id']) != set(easy['id'])


def test_length_in_characters_and_in_tokens():
  ex = _examples()
  easy, hard = splits.easy_to_hard(ex, by='length', threshold=8)  # 'ab ab ab' is 8 characters
  assert max(map(len, easy['text'])) <= 8 < min(map(len, hard['text']))
  tok = tokenizers.Tokenizer(models.WordLevel({'[UNK]': 0, 'ab': 1}, unk_token='[UNK]'))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  h = splits.hardness(ex, by='length', tokenizer=tok)
  np.testing.assert_array_equal(h, [t.count('ab') for t in ex['text']])  # one token per word
  tok.enable_padding(length=20)  # left over by another user of the same tokenizer: ignored
  tok.enable_truncation(2)
  np.testing.assert_array_equal(splits.hardness(ex, by='length', tokenizer=tok), h)
  easy_t, _ = splits.easy_to_hard(ex, by='length', threshold=3, tokenizer=tok)
  np.testing.assert_array_equal(easy_t['id'], easy['id'])  # 3 words <=> 8 characters
  path = arithmetic.tokenizer_path()  # a tokenizer.json path: characters, no specials
  np.testing.assert_array_equal(splits.hardness(ex, by='length', tokenizer=path),
                                [len(t) for t in ex['text']])


def test_scores_from_the_caller():
  ex = _examples()
  confidence = np.linspace(0.5, 1.0, 200)
  easy, hard = splits.easy_to_hard(ex, by='scores', scores=1 - confidence, easy_fraction=0.25)
  _check_partition(ex, easy, hard)
  np.testing.assert_array_equal(np.sort(easy['id']), np.sort(ex['id'][150:]))  # most confident
  with pytest.raises(UserError, match="needs scores"):
    splits.easy_to_hard(ex, by='scores', threshold=0.5)
  with pytest.raises(UserError, match=r'shape \(3,\).*give 200 finite'):
    splits.easy_to_hard(ex, by='scores', scores=[1, 2, 3], threshold=0.5)
  with pytest.raises(UserError, match='give 200 finite'):
    splits.easy_to_hard(ex, by='scores', scores=np.full(200, np.nan), threshold=0.5)


def test_groups_stay_together_as_hard_as_their_hardest_row():
  ex = _examples(groups=5)
  easy, hard = splits.easy_to_hard(ex, by='level', threshold=2)
  _check_partition(ex, easy, hard)
  assert not set(easy['group']) & set(hard['group'])
  assert easy['level'].max() <= 2
  for g in np.unique(hard['group']):
    assert ex['level'][ex['group'] == g].max() > 2


def test_errors_are_one_clear_line():
  ex = _examples()
  with pytest.raises(UserError, match=r"by='grade' is not a numeric field.*\['label', 'level', "
                                      r"'length', 'scores'\]"):
    splits.easy_to_hard(ex, by='grade', threshold=1)
  with pytest.raises(UserError, match="by='text' is not a numeric field"):
    splits.easy_to_hard(ex, by='text', threshold=1)
  with pytest.raises(UserError, match='exactly one of easy_fraction'):
    splits.easy_to_hard(ex, by='level')
  with pytest.raises(UserError, match='exactly one of easy_fraction'):
    splits.easy_to_hard(ex, by='level', threshold=1, easy_fraction=0.5)
  with pytest.raises(UserError, match=r'easy_fraction=1.5 must be in \(0, 1\)'):
    splits.easy_to_hard(ex, by='level', easy_fraction=1.5)
  with pytest.raises(UserError, match=r'the hard part is empty \(hardness from 0 to 4\)'):
    splits.easy_to_hard(ex, by='level', threshold=4)
  with pytest.raises(UserError, match="reads field 'question'"):
    splits.easy_to_hard(ex, by='length', text_field='question', threshold=4)


def test_dataset_split_on_the_arithmetic_task_then_weak_to_strong():
  ds = arithmetic.load(digits=(2, 3), num_train=200, num_test=100, seed=0)
  for kw in (dict(threshold=1), dict(easy_fraction=0.5)):
    e2h = splits.easy_to_hard_dataset(ds, by='carries', **kw)
    train, test, test_easy = (e2h.splits[k] for k in ('train', 'test', 'test_easy'))
    assert train['carries'].max() < test['carries'].min()  # every test item harder
    assert test_easy['carries'].max() <= train['carries'].max()
    np.testing.assert_array_equal(np.sort(np.concatenate([test['id'], test_easy['id']])),
                                  np.sort(ds.splits['test']['id']))
    if 'easy_fraction' in kw:
      assert len(train['id']) == 200
    parts = splits.weak_to_strong(e2h, seed=0)
    assert parts.splits['weak_train']['carries'].max() <= train['carries'].max()
    np.testing.assert_array_equal(parts.splits['test']['id'], test['id'])
  by_digits = splits.easy_to_hard_dataset(ds, by='digits', threshold=2)
  assert (by_digits.splits['train']['digits'] == 2).all()
  assert (by_digits.splits['test']['digits'] == 3).all()
  scores = {'train': ds.splits['train']['digits'] * 1.0, 'test': ds.splits['test']['digits'] * 1.0}
  by_scores = splits.easy_to_hard_dataset(ds, by='scores', scores=scores, threshold=2.5)
  np.testing.assert_array_equal(by_scores.splits['test']['id'], by_digits.splits['test']['id'])
  with pytest.raises(UserError, match="no 'test' example is harder"):
    splits.easy_to_hard_dataset(ds, by='carries', threshold=3)


def test_weak_to_strong_with_hardness_trains_easy_and_tests_hard():
  """splits.hardness (a config option of every protocol): A, B and val come from the easy items,
  test holds only items harder than all of them."""
  from w2s.data import arithmetic
  ds = arithmetic.load(digits=(2, 3), num_train=200, num_test=60)
  parts = splits.weak_to_strong(ds, seed=1, val_fraction=0.1,
                                hardness=dict(by='carries', threshold=0))
  train_rows = [parts.splits[k] for k in ('weak_train', 'strong_train', 'val')]
  assert all((np.asarray(r['carries']) == 0).all() for r in train_rows)
  assert (np.asarray(parts.splits['test']['carries']) > 0).all()
  assert len(parts.splits['test']['id']) == int((ds.splits['test']['carries'] > 0).sum())
  with pytest.raises(UserError, match="by='scores'"):
    splits.weak_to_strong(ds, hardness=dict(by='scores', easy_fraction=0.5))
