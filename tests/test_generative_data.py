"""The offline generative world: prompt templates, prompt/response tokenization with loss masks,
answer extraction, and the synthetic arithmetic corpus, task and preference pairs."""
import os
import re

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers, processors

from w2s import registry
from w2s.data import arithmetic as ar
from w2s.data import base
from w2s.data import text
from w2s.errors import UserError
from w2s.generative import answers
from w2s.generative import templates
from w2s.generative import tokens

V = ar.VOCAB


def ids(s):
  return [V[c] for c in s]


@pytest.fixture(scope='module')
def tok_path():
  return ar.tokenizer_path()  # under the session's W2S_CACHE_DIR (conftest)


def _bos_tokenizer():
  """Word-level, with a BOS post-processor, its own pad and '</s>' as end-of-text (Llama-like)."""
  vocab = {'<pad>': 0, '<s>': 1, '</s>': 2, 'a': 3, 'b': 4, 'c': 5, 'd': 6}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token='<pad>'))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.add_special_tokens(['<pad>', '<s>', '</s>'])
  tok.post_processor = processors.TemplateProcessing(single='<s> $A', special_tokens=[('<s>', 1)])
  return tok


# ---------------------------------------------------------------- templates

def test_template_check_names_the_unknown_field_and_the_known_ones():
  assert templates.check('q: {question} a:', ['question', 'answer']) == ['question']
  with pytest.raises(UserError, match=r"unknown field 'qestion'.*\['answer', 'question'\]"):
    templates.check('q: {qestion} a:', ['question', 'answer'])
  for bad in ('q: {question a:', 'q: question} a:'):
    with pytest.raises(UserError, match='unbalanced brace'):
      templates.check(bad, ['question'])
  for bad in ('{}', '{0}', '{a.real}', '{a[0]}'):
    with pytest.raises(UserError, match='not a plain field'):
      templates.check(bad, ['a'])


def test_template_render():
  row = {'a': np.int64(347), 'b': 589, 'score': 0.25}
  assert templates.render('q: what is {a} plus {b}? {{x}} {score:.1f}', row) == \
      'q: what is 347 plus 589? {x} 0.2'
  cols = {'a': np.array([1, 2]), 'b': np.array(['x', 'y'], dtype=object)}
  assert templates.render_all('{a}-{b}', cols) == ['1-x', '2-y']
  assert templates.render_all('{a}-{b}', [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'y'}]) == ['1-x', '2-y']
  with pytest.raises(UserError, match="row 1 has no field 'b'"):
    templates.render_all('{a}-{b}', [{'a': 1, 'b': 'x'}, {'a': 2}])


# ---------------------------------------------------------------- tokens

def test_encode_sft_by_hand(tok_path):
  out = tokens.encode_sft(['1+1=', '12+3='], ['2', '15'], tok_path, max_length=8)
  want = np.array([ids('1+1=2') + [0, 0, 0], ids('12+3=15') + [0]], np.int32)
  np.testing.assert_array_equal(out['input_ids'], want)  # the eos (id 0) closes each response
  np.testing.assert_array_equal(out['attention_mask'], [[1] * 6 + [0] * 2, [1] * 8])
  np.testing.assert_array_equal(out['loss_mask'], [[0, 0, 0, 0, 1, 1, 0, 0],
                                                   [0, 0, 0, 0, 0, 1, 1, 1]])
  assert out['input_ids'].dtype == np.int32 and out['attention_mask'].dtype == np.int32
  assert out['loss_mask'].dtype == np.float32
  np.testing.assert_array_equal(out['prompt_length'], [4, 5])
  assert out['truncated_prompts'] == out['truncated_responses'] == 0
  no_eos = tokens.encode_sft(['1+1='], ['2'], tok_path, max_length=8, eos=False)
  np.testing.assert_array_equal(no_eos['loss_mask'][0], [0, 0, 0, 0, 1, 0, 0, 0])


def test_encode_sft_truncation_is_counted_and_a_full_prompt_is_an_error(tok_path):
  out = tokens.encode_sft(['q:', 'q:'], [' 936', ' 9'], tok_path, max_length=5)
  np.testing.assert_array_equal(out['input_ids'], [ids('q: 93'), ids('q: 9') + [0]])
  np.testing.assert_array_equal(out['loss_mask'], [[0, 0, 1, 1, 1], [0, 0, 1, 1, 1]])
  assert out['truncated_responses'] == 1 and out['truncated_prompts'] == 0  # no eos on the cut one
  cut = tokens.encode_sft(['abcd', 'ab'], ['x', 'y'], tok_path, max_length=8, max_prompt_length=3)
  np.testing.assert_array_equal(cut['input_ids'][0, :5], ids('bcdx') + [0])  # keeps the end
  assert cut['truncated_prompts'] == 1
  with pytest.raises(UserError, match=r'2 of 3 prompts fill max_length=4 tokens alone \(longest 5'):
    tokens.encode_sft(['abcd', 'ab', 'abcde'], ['x'] * 3, tok_path, max_length=4)
  with pytest.raises(UserError, match='cannot tokenize the responses'):
    tokens.encode_sft(['a'], ['Q'], tok_path, max_length=8)  # no such character


def test_encode_sft_adds_the_tokenizers_own_specials_to_prompts_only():
  tok = _bos_tokenizer()
  out = tokens.encode_sft(['a b'], ['c d'], tok, max_length=8)
  np.testing.assert_array_equal(out['input_ids'][0], [1, 3, 4, 5, 6, 2, 0, 0])  # <s> a b c d </s>
  np.testing.assert_array_equal(out['loss_mask'][0], [0, 0, 0, 1, 1, 1, 0, 0])
  assert tokens.eos_id(tok) == 2 and tokens.eos_id(tok, '<s>') == 1
  with pytest.raises(UserError, match='no end-of-text token'):
    tokens.eos_id(tok, '<|im_end|>')


def test_encode_ignores_padding_left_on_the_shared_tokenizer(tok_path):
  text.tokenize(['1+1=2'], tok_path, max_length=3)  # sets truncation/padding on the cached one
  out = tokens.encode_sft(['1+1='], ['2'], tok_path, max_length=8)
  np.testing.assert_array_equal(out['input_ids'][0], ids('1+1=2') + [0, 0, 0])


def test_encode_pairs(tok_path):
  out = tokens.encode_pairs(['1+1=', '2+2='], ['2', '4'], ['3', '44'], tok_path, max_length=7)
  assert out['input_ids'].shape == out['loss_mask'].shape == (2, 2, 7)
  for k, resp in ((0, ['2', '4']), (1, ['3', '44'])):
    one = tokens.encode_sft(['1+1=', '2+2='], resp, tok_path, max_length=7)
    for key in ('input_ids', 'attention_mask', 'loss_mask'):
      np.testing.assert_array_equal(out[key][:, k], one[key])
  np.testing.assert_array_equal(out['input_ids'][1, 1], ids('2+2=44') + [0])
  with pytest.raises(UserError, match=r'1 of 2 preference pairs .*id 17'):
    tokens.encode_pairs(['a', 'b'], ['x', 'y'], ['z', 'y'], tok_path, max_length=8, ids=[16, 17])


def test_encode_prompts_and_decode(tok_path):
  p = tokens.encode_prompts(['1+1=', 'q: 12'], tok_path, 6)
  np.testing.assert_array_equal(p['input_ids'], [ids('1+1=') + [0, 0], ids('q: 12') + [0]])
  np.testing.assert_array_equal(p['attention_mask'], [[1] * 4 + [0] * 2, [1] * 5 + [0]])
  with pytest.raises(UserError, match='1 of 2 prompts are longer than max_length=4'):
    tokens.encode_prompts(['1+1=', 'q: 12'], tok_path, 4)
  gen = np.array([ids('42') + [0] + ids('7'), ids('9 1') + [5]])  # row 0 goes on after its eos
  mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
  assert tokens.decode(gen, mask, tok_path) == ['42', '9 1']
  sft = tokens.encode_sft(['q:'], [' 936\n'], tok_path, max_length=10)
  resp = np.where(sft['loss_mask'] > 0, sft['input_ids'], 0)
  assert tokens.decode(resp[:, 2:], sft['loss_mask'][:, 2:].astype(int), tok_path) == [' 936\n']


def test_pack_documents(tok_path):
  out = tokens.pack_documents(['1+1=2', 'abc'], tok_path, seq_len=4)
  stream = ids('1+1=2') + [0] + ids('abc') + [0]
  np.testing.assert_array_equal(out['input_ids'], [stream[:4], stream[4:8], stream[8:] + [0, 0]])
  np.testing.assert_array_equal(out['attention_mask'][2], [1, 1, 0, 0])
  np.testing.assert_array_equal(out['loss_mask'], [[0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 0, 0]])


# ---------------------------------------------------------------- answers

def test_answer_extractors():
  got = answers.extract('last_number', ['so 347+589=936.', 'it is 1,234 or -5', 'x 3.5 y',
                                        'none here', '12,34'])
  assert got == ['936', '-5', '3.5', None, '34']
  assert answers.last_number('total: 1,234,567 apples') == '1234567'
  assert answers.extract('first_line', ['  42 \nmore', '\nsecond']) == ['42', None]
  assert answers.extract(r'regex:a: *(\d+)', ['q? a: 17 b: 3', 'a:x']) == ['17', None]
  assert answers.extract(r'regex:\d+', ['x 12 y 13']) == ['12']
  with pytest.raises(UserError, match="extractor 'last_number' matched none of 2 generations"):
    answers.extract('last_number', ['no', 'numbers'])
  with pytest.raises(UserError, match="unknown answer extractor 'last'.*last_number"):
    answers.extract('last', ['1'])
  with pytest.raises(UserError, match='not a valid regular expression'):
    answers.extract('regex:(', ['1'])


def test_exact_match():
  score = answers.exact_match(['936', ' 935', None, '0936'], [' 936', ' 936', ' 936', '936'])
  np.testing.assert_array_equal(score, [1, 0, 0, 0])
  assert score.dtype == np.float32
  with pytest.raises(UserError, match='2 predictions for 1 gold'):
    answers.exact_match(['1', '2'], ['1'])


# ---------------------------------------------------------------- the arithmetic world

def test_tokenizer_round_trips_every_character(tok_path, tmp_path, monkeypatch):
  tok = tokenizers.Tokenizer.from_file(tok_path)  # not the shared one: text.encode sets its padding
  assert tok.get_vocab_size() == len(ar.CHARS) + 1 == 47 and tok.token_to_id(ar.EOS) == 0
  enc = tok.encode(ar.CHARS + ar.EOS)
  assert enc.ids == list(range(1, 47)) + [0]
  assert tok.decode(enc.ids) == ar.CHARS and text.pad_token(tok) == (0, ar.EOS)
  line = 'q: what is 347 plus 589? a: 936\n  count 3: 3 4,5.*-='
  assert tok.decode(tok.encode(line).ids) == line and len(tok.encode(line).ids) == len(line)
  assert tok_path.startswith(os.environ['W2S_CACHE_DIR'])
  mtime = os.stat(tok_path).st_mtime_ns
  assert ar.tokenizer_path() == tok_path and os.stat(tok_path).st_mtime_ns == mtime  # written once
  monkeypatch.setenv('W2S_CACHE_DIR', str(tmp_path))
  other = ar.tokenizer_path()
  assert other.startswith(str(tmp_path)) and open(other).read() == open(tok_path).read()
  assert [f for f in os.listdir(os.path.dirname(other))] == ['tokenizer.json']  # no temp left


def _carries_by_hand(a: int, b: int) -> int:
  x, y = str(a)[::-1], str(b)[::-1]
  carry = count = 0
  for i in range(max(len(x), len(y))):
    carry = int(int(x[i] if i < len(x) else 0) + int(y[i] if i < len(y) else 0) + carry >= 10)
    count += carry
  return count


def test_carries_and_wrong_sums_by_hand():
  np.testing.assert_array_equal(ar.carries([347, 999, 0, 5, 50, 19], [589, 1, 0, 5, 50, 1]),
                                [2, 3, 0, 1, 1, 1])
  # 347 + 589 = 936; dropping the ones' carry gives 926, the tens' 836, both 826 (7+9 -> 6,
  # 4+8 -> 2, 3+5 -> 8); one digit off: 937, 935, 946 (926 and 836 already listed; 9 + 1 no)
  assert ar.wrong_sums(347, 589) == {'dropped_carry': [926, 836, 826],
                                     'off_by_one': [937, 935, 946]}
  assert ar.wrong_sums(12, 31) == {'dropped_carry': [], 'off_by_one': [44, 42, 53, 33]}
  assert ar.wrong_sums(5, 5) == {'dropped_carry': [0], 'off_by_one': [11, 20]}  # 10: no 9, no 00


def test_task_rows_by_hand():
  ds = ar.load(digits=(1, 3), num_train=40, num_test=20, seed=3)
  assert ds.num_classes == 1 and ds.input_kind == 'text'
  for split, n in (('train', 80), ('test', 40)):
    ex = ds.splits[split]
    assert len(ex['id']) == n
    for i in range(n):
      a, b, d = int(ex['a'][i]), int(ex['b'][i]), int(ex['digits'][i])
      assert ex['prompt'][i] == ex['text'][i] == f'q: what is {a} plus {b}? a:'
      assert ex['answer'][i] == ' ' + str(a + b)
      assert ex['carries'][i] == _carries_by_hand(a, b)
      assert len(str(a)) == len(str(b)) == d
    assert sorted(np.unique(ex['digits'])) == [1, 3]
  train, test = ds.splits['train'], ds.splits['test']
  assert not ar.problems(train) & ar.problems(test)
  assert len(ar.problems(train)) == 80
  assert ds.splits['test']['id'][0] == base.split_ids('test', [1_000_000])[0]


def test_task_is_deterministic_and_test_does_not_move_with_num_train():
  a = ar.load(digits=(2, 3), num_train=30, num_test=10, seed=0)
  b = ar.load(digits=(2, 3), num_train=30, num_test=10, seed=0)
  c = ar.load(digits=(2, 3), num_train=60, num_test=10, seed=0)
  d = ar.load(digits=(2, 3), num_train=30, num_test=10, seed=1)
  for s in ('train', 'test'):
    for k in a.splits[s]:
      np.testing.assert_array_equal(a.splits[s][k], b.splits[s][k])
  for k in a.splits['test']:
    np.testing.assert_array_equal(a.splits['test'][k], c.splits['test'][k])
  assert ar.problems(a.splits['train']) < ar.problems(c.splits['train'])  # prefix of the draw
  assert ar.problems(a.splits['test']) != ar.problems(d.splits['test'])
  with pytest.raises(UserError, match='only 100 exist'):
    ar.load(digits=1, num_train=95, num_test=10)
  with pytest.raises(UserError, match="unknown field 'c'"):
    ar.load(template='{a} and {c}')
  with pytest.raises(UserError, match='digit counts between 1 and 9'):
    ar.load(digits=(0, 2))


def test_corpus_lines_are_true_and_deterministic():
  docs = ar.corpus(300, seed=5, digits=(1, 2, 3))
  assert docs == ar.corpus(300, seed=5, digits=(1, 2, 3))
  assert docs[:100] == ar.corpus(100, seed=5, digits=(1, 2, 3))  # prefix-stable
  assert docs != ar.corpus(300, seed=6, digits=(1, 2, 3))
  kinds = {}
  for doc in docs:
    assert set(doc) <= set(ar.CHARS)
    lines = doc.split('\n')
    assert 2 <= len(lines) <= 6
    for line in lines:
      if m := re.fullmatch(r'(\d+)([-+*])(\d+)=(\d+)', line):
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        assert c == {'+': a + b, '-': a - b, '*': a * b}[op], line
        kinds[op] = kinds.get(op, 0) + 1
      else:
        word, arg, rest = re.fullmatch(r'([a-z]+) ([\d,]+): (.*)', line).groups()
        want = {'copy': lambda: arg, 'reverse': lambda: arg[::-1],
                'max': lambda: str(max(map(int, arg.split(',')))),
                'count': lambda: ' '.join(str(int(arg) + j) for j in range(len(rest.split()))),
                'spell': lambda: ' '.join(ar._SPELL[int(ch)] for ch in arg)}[word]()
        assert rest == want, line
        kinds[word] = kinds.get(word, 0) + 1
  assert set(kinds) == {'+', '-', '*', 'copy', 'reverse', 'max', 'count', 'spell'}
  total = sum(kinds.values())
  assert 0.4 < kinds['+'] / total < 0.6  # addition = 0.5 of the lines


def test_corpus_and_task_are_disjoint_in_format_and_in_test_problems():
  ds = ar.load(digits=(1, 2), num_train=50, num_test=50)
  test = ar.problems(ds.splits['test'])
  docs = ar.corpus(400, seed=0, digits=(1, 2), exclude=test)
  blob = '\n'.join(docs)
  for ex in ds.splits.values():
    assert not any(p in blob for p in ex['prompt'])
  for word in ('what', 'plus', 'q:', '?'):
    assert word not in blob
  stated = {tuple(map(int, m)) for m in re.findall(r'^(\d+)\+(\d+)=', blob, re.M)}
  assert stated and not stated & test and not {(b, a) for a, b in stated} & test
  with pytest.raises(UserError, match='hit excluded problems'):
    ar.corpus(5, seed=0, digits=1, exclude={(a, b) for a in range(10) for b in range(10)})


def test_preference_pairs():
  ds = ar.load(view='pairs', digits=(2, 3), num_train=100, num_test=10, seed=2)
  ex = ds.splits['train']
  assert ds.num_classes == 2 and ds.label_names == ['response_a', 'response_b']
  resp = np.stack([ex['response_a'], ex['response_b']], axis=1)
  for i in range(len(ex['id'])):
    a, b, lab = int(ex['a'][i]), int(ex['b'][i]), int(ex['label'][i])
    assert resp[i, lab] == ex['answer'][i] == f' {a + b}'
    wrong = int(resp[i, 1 - lab])
    assert wrong in ar.wrong_sums(a, b)[ex['wrong_kind'][i]]
  assert 60 < ex['label'].sum() < 140  # both orders, of 200
  assert 30 < (ex['wrong_kind'] == 'dropped_carry').sum() < 140
  again = ar.load(view='pairs', digits=(2, 3), num_train=100, num_test=10, seed=2).splits['train']
  np.testing.assert_array_equal(again['response_b'], ex['response_b'])


def test_choice_and_binary_views():
  ch = ar.load(view='choice', digits=(1, 2), num_train=30, num_test=5, num_choices=4)
  ex = ch.splits['train']
  assert ch.num_classes == 4 and ex['choices'].shape == (60, 4)
  for i in range(60):
    c = ex['choices'][i]
    assert len(set(c.tolist())) == 4 and c[ex['label'][i]] == ex['a'][i] + ex['b'][i]
    assert ex['text'][i].endswith(f'choices: {", ".join(map(str, c))}. a:')
  assert len(np.unique(ex['label'])) > 1
  bi = ar.load(view='binary', digits=2, num_train=20, num_test=5)
  ex = bi.splits['train']
  assert len(ex['id']) == 40 and ex['label'].sum() == 20  # 'pair' mode: correct + one wrong
  for g in np.unique(ex['group']):
    rows = ex['group'] == g
    assert ex['label'][rows].sum() == 1
    right = ex['text'][rows][ex['label'][rows] == 1][0]
    assert right == ex['prompt'][rows][0] + ex['answer'][rows][0]
  assert (ex['group'] // 4 == ex['id'] // 4).all()


def test_registered_by_file_name_and_tokenizes_end_to_end(tok_path):
  ds = registry.build('datasets', dict(name='arithmetic', digits=3, num_train=8, num_test=4))
  ex = ds.splits['test']
  out = tokens.encode_sft(list(ex['prompt']), list(ex['answer']), tok_path, max_length=40)
  assert out['truncated_responses'] == 0
  # the loss-masked tokens are the answer and the closing eos
  for i in range(4):
    target = out['input_ids'][i][out['loss_mask'][i] > 0]
    assert target.tolist() == ids(ex['answer'][i]) + [0]
  assert answers.extract('last_number', list(ex['answer'])) == [str(s) for s in ex['a'] + ex['b']]
