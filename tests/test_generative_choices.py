"""w2s.generative.choices: multiple-choice scoring by log-probs against a hand computation.

The hand score of a choice runs a tiny random GPT-2 on the one full sequence prompt + choice + eos
(right-filled to the model's 32 positions with unmasked zeros, which causal attention keeps out
of the logits that matter) and sums log-softmax (numpy, float64) at the choice's tokens. The
character-level arithmetic tokenizer gives choices of different lengths (ragged rows in one
padded batch), one choice a prefix of another.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s import sharding
from w2s.data import arithmetic
from w2s.errors import UserError
from w2s.generative import choices
from w2s.models import gpt2, hf_import

T, POSITIONS = 24, 32
TOK = arithmetic.tokenizer()
EOS = arithmetic.VOCAB[arithmetic.EOS]
MODEL = gpt2.create(num_classes=1, size='tiny', vocab_size=len(arithmetic.VOCAB), num_layers=2,
                    d_model=32, num_heads=2, mlp_dim=64, max_len=POSITIONS, dropout=0.0)
PROMPTS = ['q: 7+9? a:', 'q: 12+4? a:', 'q: 60+40? a:']
CHOICES = [[' 16', ' 164', ' 1', ' 61'], [' 16', ' 15', ' 106', ' 8'],
           [' 100', ' 1', ' 10', ' 9']]
BATCH = 8  # 12 rows: one full batch and one of 4 rows + 4 fillers


@functools.lru_cache(maxsize=None)
def _params():
  ids = np.ones((1, 4), np.int32)
  params = hf_import.init_params(MODEL, jax.random.key(0), {'input_ids': ids,
                                                           'attention_mask': ids})
  # sharper logits than the N(0, 0.02) init, so choices' scores differ clearly
  return jax.tree.map(lambda a: a * 4.0 if a.ndim == 2 else a, params)


@functools.lru_cache(maxsize=None)
def _forward_fn():
  return jax.jit(lambda p, x: MODEL.apply({'params': p}, x, jnp.ones_like(x), method='lm')[0])


def _ids(s):
  return [arithmetic.VOCAB[ch] for ch in s]


def _hand(prompt, choice, *, eos=True, max_length=T):
  """(sum of log pi of the kept choice tokens, their count, cut?) from one full forward pass."""
  p, c = _ids(prompt), _ids(choice) + ([EOS] if eos else [])
  seq = (p + c)[:max_length]
  x = np.zeros((1, POSITIONS), np.int32)
  x[0, :len(seq)] = seq
  z = np.asarray(_forward_fn()(_params(), x)[0], np.float64)
  logp = z - z.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  total = sum(logp[t - 1, seq[t]] for t in range(len(p), len(seq)))
  return total, len(seq) - len(p), len(p) + len(c) > max_length


def _score(prompts=PROMPTS, cands=CHOICES, *, devices=1, **kw):
  kw = dict(dict(max_length=T, batch_size=BATCH), **kw)
  return choices.score_choices(MODEL, _params(), prompts, cands, TOK,
                               mesh=sharding.make_mesh(devices), **kw)


def test_sum_is_the_hand_sequence_logprob_on_ragged_choices():
  out = _score()
  hand = np.array([[_hand(p, c) for c in row] for p, row in zip(PROMPTS, CHOICES)])
  assert out['scores'].shape == (3, 4) and out['scores'].dtype == np.float32
  np.testing.assert_allclose(out['scores'], hand[..., 0], rtol=1e-5)
  np.testing.assert_array_equal(out['num_tokens'], hand[..., 1])
  np.testing.assert_array_equal(out['truncated'], hand[..., 2].astype(bool))
  np.testing.assert_array_equal(out['choice'], hand[..., 0].argmax(1))
  assert out['num_truncated'] == 0 and not out['truncated'].any()


def test_without_eos_a_prefix_never_loses_under_sum():
  out = _score(PROMPTS[:1], CHOICES[:1], eos=False)
  hand = [_hand(PROMPTS[0], c, eos=False)[0] for c in CHOICES[0]]
  np.testing.assert_allclose(out['scores'][0], hand, rtol=1e-5)
  assert out['scores'][0, 0] >= out['scores'][0, 1]  # ' 16' is a prefix of ' 164'
  np.testing.assert_array_equal(out['num_tokens'][0], [3, 4, 2, 3])


def test_mean_is_sum_over_the_token_count():
  total, mean = _score(), _score(normalize='mean')
  np.testing.assert_array_equal(mean['logprob'], total['logprob'])
  np.testing.assert_array_equal(total['num_tokens'], [[4, 5, 3, 4], [4, 4, 5, 3], [5, 3, 4, 3]])
  np.testing.assert_allclose(mean['scores'] * total['num_tokens'], total['scores'], rtol=1e-6)
  np.testing.assert_array_equal(mean['choice'], mean['scores'].argmax(1))
  assert not np.allclose(mean['scores'], total['scores'])


def test_truncation_is_counted_and_scored_on_the_kept_tokens():
  # 20 prompt tokens + ' 16' + eos = 24 fits T exactly; ' 100' + eos = 25 does not
  prompt = 'q: 60+40 and 7+9? a:'
  assert len(prompt) == 20
  cands = [[' 16', ' 100', ' 1', ' 1000']]
  out = _score([prompt], cands)
  hand = np.array([_hand(prompt, c) for c in cands[0]])
  np.testing.assert_array_equal(out['truncated'][0], [False, True, False, True])
  assert out['num_truncated'] == 2
  np.testing.assert_array_equal(out['num_tokens'][0], [4, 4, 3, 4])  # ' 100', ' 1000' cut to 4
  np.testing.assert_allclose(out['scores'][0], hand[:, 0], rtol=1e-5)
  enc = choices.encode_choices([prompt], cands, TOK, max_length=T)
  assert enc['input_ids'].shape == (1, 4, T) and enc['num_truncated'] == 2
  # a cut choice loses its eos: the last kept token of ' 1000' is a digit, of ' 16' the eos
  assert enc['input_ids'][0, 0, -1] == EOS and enc['input_ids'][0, 3, -1] == _ids('0')[0]


def test_eight_devices_equal_one():
  one, eight = _score(), _score(devices=8)
  np.testing.assert_allclose(eight['scores'], one['scores'], rtol=1e-5)
  np.testing.assert_array_equal(eight['choice'], one['choice'])
  np.testing.assert_array_equal(eight['num_tokens'], one['num_tokens'])


def test_one_compile_for_any_number_of_prompts():
  before = choices._row_logprobs._cache_size()
  _score()                                        # 12 rows: two batches
  after = choices._row_logprobs._cache_size()
  _score(PROMPTS[:1], CHOICES[:1], normalize='mean')  # 4 rows: one batch, half fillers
  _score(PROMPTS[:2], CHOICES[:2], eos=False)
  assert after - before <= 1 and choices._row_logprobs._cache_size() == after


def test_choice_texts_of_the_arithmetic_choice_view_hold_the_gold_answer():
  raw = arithmetic.load(view='choice', num_train=2, num_test=5, num_choices=4).splits['test']
  texts = choices.choice_texts(raw)
  assert texts.shape == (10, 4) and texts.dtype == object
  assert all(t.startswith(' ') and t[1:].isdigit() for t in texts.reshape(-1))
  rows = np.arange(10)
  np.testing.assert_array_equal(texts[rows, raw['label']], raw['answer'])
  np.testing.assert_array_equal(choices.correct(raw['label'], raw['label']), np.ones(10))
  assert choices.choice_texts({'c': [['a', 'b']]}, 'c', '{}').tolist() == [['a', 'b']]


@pytest.mark.parametrize('call, message', [
    (lambda: _score(normalize='max'), 'normalize'),
    (lambda: _score(PROMPTS[:2], [[' 1', ' 2'], [' 3']]), r'\[N, K\]'),
    (lambda: _score(['q' * 24], [[' 1', ' 2']]), 'fill max_length=24'),
    (lambda: _score(['q' * 30], [[' 1', ' 2']]), 'fill max_length=24'),
    (lambda: _score(batch_size=6, devices=8), 'divisible'),
    (lambda: choices.encode_choices(['q: a:'], [['', ' 1']], TOK, max_length=T, eos=False),
     'no tokens'),
    (lambda: choices.choice_texts({'choices': np.zeros(3)}), r'\[N, K\]'),
    (lambda: choices.choice_texts({'a': 1}), 'missing'),
    (lambda: choices.correct(np.zeros(3), np.zeros(2)), 'labels'),
])
def test_bad_input_is_one_user_error(call, message):
  with pytest.raises(UserError, match=message):
    call()
