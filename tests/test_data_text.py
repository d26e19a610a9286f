"""Tokenization (WordPiece from MiniLM's files, byte-level BPE trained here) and featurize."""
import os

import numpy as np
import pytest
import tokenizers

from w2s import assets
from w2s.data import base
from w2s.data import text
from w2s.data.featurize import featurize
from w2s.errors import UserError

SENTENCES = ['A three-hour cinema master class.',
             "It's always fascinating to watch Marker the essayist at work!",
             'Naïve, über-clever and 100% unmissable — 5 stars.']


@pytest.fixture(scope='module')
def minilm():
  return assets.minilm_dir()


@pytest.fixture(scope='module')
def bpe_path(tmp_path_factory):
  """A tiny GPT-2-style byte-level BPE (no pad token, eos '<|endoftext|>'), trained in-process."""
  tok = tokenizers.ByteLevelBPETokenizer()
  corpus = SENTENCES * 20 + ['the quick brown fox jumps over the lazy dog'] * 20
  tok.train_from_iterator(corpus, vocab_size=400, min_frequency=1,
                          special_tokens=['<|endoftext|>'])
  path = str(tmp_path_factory.mktemp('bpe') / 'tokenizer.json')
  tok.save(path)
  return path


def test_wordpiece_ids_match_tokenizers_from_minilm_vocab(minilm):
  ref = tokenizers.BertWordPieceTokenizer(os.path.join(minilm, 'vocab.txt'), lowercase=True)
  out = text.tokenize(SENTENCES, minilm, max_length=32)
  for i, s in enumerate(SENTENCES):
    want = ref.encode(s).ids
    assert want[0] == 101 and want[-1] == 102  # [CLS] ... [SEP]
    n = len(want)
    assert out['input_ids'][i, :n].tolist() == want
    assert out['attention_mask'][i].tolist() == [1] * n + [0] * (32 - n)
    assert (out['input_ids'][i, n:] == 0).all()  # [PAD] = 0
  assert out['input_ids'].dtype == np.int32 and out['input_ids'].shape == (3, 32)


def test_truncation_is_counted_and_keeps_sep(minilm):
  ref = tokenizers.BertWordPieceTokenizer(os.path.join(minilm, 'vocab.txt'), lowercase=True)
  lengths = [len(ref.encode(s).ids) for s in SENTENCES]
  max_length = sorted(lengths)[1]  # the two longer-or-equal ones: only strictly longer truncate
  enc = text.encode(SENTENCES, minilm, max_length)
  assert enc.num_truncated == sum(n > max_length for n in lengths) >= 1
  assert (enc.input_ids[:, -1][np.array(lengths) >= max_length] == 102).all()
  assert text.encode(SENTENCES, minilm, 64).num_truncated == 0


def test_pairs_truncate_the_context_first(minilm):
  context = 'word ' * 200
  enc = text.encode([context], minilm, 32, text_pairs=['Question: is it long?'])
  assert enc.num_truncated == 1
  ids, types = enc.input_ids[0], enc.token_type_ids[0]
  question = tokenizers.BertWordPieceTokenizer(
      os.path.join(minilm, 'vocab.txt'), lowercase=True).encode('Question: is it long?').ids[1:]
  assert ids[-len(question):].tolist() == question  # question and final [SEP] intact
  assert types[-len(question):].tolist() == [1] * len(question) and types[0] == 0


def test_byte_level_bpe_pads_with_eos(bpe_path):
  ref = tokenizers.Tokenizer.from_file(bpe_path)
  eos = ref.token_to_id('<|endoftext|>')
  assert ref.padding is None and text.pad_token(ref) == (eos, '<|endoftext|>')
  out = text.tokenize(SENTENCES, bpe_path, max_length=80)
  for i, s in enumerate(SENTENCES):
    want = ref.encode(s).ids
    n = len(want)
    assert out['input_ids'][i, :n].tolist() == want
    assert (out['input_ids'][i, n:] == eos).all()
    assert out['attention_mask'][i].sum() == n
    assert ref.decode(want) == s  # byte-level: lossless, accents and dashes included


def test_missing_tokenizer_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='no tokenizer.json'):
    text.tokenize(['x'], str(tmp_path), 16)


def test_featurize_each_input_kind(minilm):
  ids, labels = np.array([3, 1], np.int64), np.array([1, 0], np.int64)
  images = np.array([np.full((2, 2, 1), 0, np.uint8), np.full((2, 2, 1), 255, np.uint8)])
  ds = base.Dataset('img', 2, ['a', 'b'], 'image', {})
  f = featurize(ds, {'id': ids, 'label': labels, 'image': images})
  assert f['x'].dtype == np.float32 and f['x'].shape == (2, 2, 2, 1)
  assert f['x'].min() == 0.0 and f['x'].max() == 1.0
  np.testing.assert_array_equal(f['id'], ids)
  ds = base.Dataset('vec', 2, ['a', 'b'], 'vector', {})
  x = np.ones((2, 5), np.float32)
  np.testing.assert_array_equal(featurize(ds, {'id': ids, 'label': labels, 'x': x})['x'], x)
  ds = base.Dataset('txt', 2, ['a', 'b'], 'text', {})
  raw = {'id': ids, 'label': labels, 'text': np.array(SENTENCES[:2], dtype=object),
         'group': ids}
  with pytest.raises(UserError, match='tokenizer'):
    featurize(ds, raw)
  f = featurize(ds, raw, tokenizer=minilm, max_length=24)
  assert sorted(f) == ['attention_mask', 'id', 'input_ids', 'label']
  assert f['input_ids'].shape == (2, 24)
  raw['text_pair'] = np.array(['yes', 'no'], dtype=object)
  assert 'token_type_ids' in featurize(ds, raw, tokenizer=minilm, max_length=24)


def test_left_truncation_keeps_the_end():
  from w2s import assets
  from w2s.data import text as text_lib
  words = ' '.join(f'w{i}' for i in range(200)) + ' the ending matters'
  right = text_lib.tokenize([words], assets.minilm_dir(), 16)
  left = text_lib.tokenize([words], assets.minilm_dir(), 16, truncation='left')
  tok = text_lib.load_tokenizer(assets.minilm_dir())
  decode = lambda ids: tok.decode([int(i) for i in ids])
  assert decode(left['input_ids'][0]).endswith('the ending matters')
  assert 'ending' not in decode(right['input_ids'][0])
  assert decode(right['input_ids'][0]).startswith('w0')
  assert left['attention_mask'].sum() == right['attention_mask'].sum() == 16


# ---------------------------------------------------------------------------------------------
# Length buckets (w2s.data.pipeline.bucket_length, issue 22): geometric, shared by train and eval.

def test_length_buckets_are_geometric_and_capped():
  from w2s.data import pipeline
  got = {n: pipeline.bucket_length(n, 16, 64) for n in (0, 1, 16, 17, 32, 33, 48, 49, 64)}
  assert got == {0: 16, 1: 16, 16: 16, 17: 32, 32: 32, 33: 64, 48: 64, 49: 64, 64: 64}
  # T = 512: 6 shapes (16 .. 512) where multiples of 16 gave 32; a T that is no bucket caps
  assert sorted({pipeline.bucket_length(n, 16, 512) for n in range(1, 513)}) == [
      16, 32, 64, 128, 256, 512]
  assert [pipeline.bucket_length(n, 16, 100) for n in (64, 65, 100)] == [64, 100, 100]
  assert [pipeline.bucket_length(n, 4, 64) for n in (3, 5, 9, 17)] == [4, 8, 16, 32]
  with pytest.raises(UserError, match='length_bucket=0 must be a positive'):
    pipeline.bucket_length(5, 0, 64)


def _token_split(n=40, t=64, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(3, 41, n)  # at most 40 tokens: multiples of 16 cut at 48, buckets at 64
  ids = rng.integers(5, 500, (n, t)).astype(np.int32)
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  return {'id': np.arange(n), 'input_ids': ids * mask, 'attention_mask': mask,
          'label': np.eye(2, dtype=np.float32)[rng.integers(0, 2, n)]}, lengths


def test_train_and_eval_batches_share_the_buckets():
  from w2s.data import pipeline
  split, lengths = _token_split()
  seen = set()
  for i, b in enumerate(pipeline.train_batches(split, global_batch=8, seed=1, num_steps=10)):
    rows = np.searchsorted(split['id'], b['id'])
    t = b['input_ids'].shape[1]
    assert t == pipeline.bucket_length(lengths[rows].max(), 16, 64), (i, t)
    np.testing.assert_array_equal(b['attention_mask'].sum(1), lengths[rows])  # no token cut
    seen.add(t)
  for b in pipeline.eval_batches(split, global_batch=16):
    seen.add(b['input_ids'].shape[1])
  assert seen <= {16, 32, 64} and 64 in seen, seen


def test_padding_to_a_bucket_changes_no_logit_or_gradient():
  """The same rows (longest 40 tokens) at the old multiple-of-16 length (48) and at the geometric
  bucket (64), through a bidirectional transformer: logits, loss and every parameter gradient
  agree to float32 rounding (the attention mask makes the padded tokens inert)."""
  import jax
  import jax.numpy as jnp
  from w2s import registry
  split, lengths = _token_split(n=6, seed=3)
  assert lengths.max() <= 40
  model = registry.build('models', dict(name='bert', size='tiny', vocab_size=512, dropout=0.0,
                                        num_layers=1), num_classes=2)
  at = lambda t: {k: split[k][:, :t] for k in ('input_ids', 'attention_mask')}
  # random params drawn on the host (no init to compile), the head too: at its zero init the
  # logits would agree trivially
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), at(16), train=False))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(s.dtype),
                        shapes['params'])

  @jax.jit
  def run(p, batch):  # (loss, logits, grads, logits with the padding unmasked)
    def loss(p):
      logits = model.apply({'params': p}, batch, train=False)
      return -jnp.mean(jnp.sum(split['label'] * jax.nn.log_softmax(logits), -1)), logits
    (l, logits), g = jax.value_and_grad(loss, has_aux=True)(p)
    unmasked = dict(batch, attention_mask=jnp.ones_like(batch['attention_mask']))
    return l, logits, g, model.apply({'params': p}, unmasked, train=False)
  old_loss, old_logits, old_g, _ = run(params, at(48))
  new_loss, new_logits, new_g, unmasked = run(params, at(64))
  assert np.abs(np.asarray(old_logits)).min() > 1e-3  # not trivially zero
  np.testing.assert_allclose(new_logits, old_logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_loss, old_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), new_g, old_g)
  # the padding is there and masked: unmasking it changes the logits
  assert not np.allclose(unmasked, old_logits, rtol=1e-3)
