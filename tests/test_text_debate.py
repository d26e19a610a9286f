"""Text debate (Lang et al. 2025) end to end on tiny random-weight checkpoints of each decoder family.

Tiny GPT-2, Llama and Qwen2 checkpoints are drawn with transformers and saved with MiniLM's
tokenizer.json (so every family reads and writes the same WordPiece vocabulary); the task is SciQ
files in the real schema, loaded through `w2s.data.sciq`. Checked: transcripts are generated,
kept by example id and reused (a rerun generates nothing and creates no stage), they do not
depend on the batch an example shares, they reach the weak judges' inputs behind the question
and answer, the vmapped per-member probes and the one-after-the-other fine-tuned members both
run, and every condition ends in a student with a PGR.
"""
import glob
import json
import os
import shutil

import numpy as np
import pytest

from ml_collections import ConfigDict

from w2s import sharding
from w2s.data import text as tokenize_lib
from w2s.debate import text as text_lib
from w2s.errors import UserError
from w2s.models import hf_import

transformers = pytest.importorskip('transformers')
torch = pytest.importorskip('torch')

VOCAB = 30522  # MiniLM's WordPiece vocabulary


def _tiny(family: str, path) -> str:
  common = dict(vocab_size=VOCAB, max_position_embeddings=512)
  torch.manual_seed(0)
  if family == 'gpt2':
    m = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=VOCAB, n_embd=32,
                                                             n_layer=2, n_head=2, n_positions=512,
                                                             bos_token_id=101, eos_token_id=102))
  else:
    cls = transformers.LlamaConfig if family == 'llama' else transformers.Qwen2Config
    lm = transformers.LlamaForCausalLM if family == 'llama' else transformers.Qwen2ForCausalLM
    m = lm(cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, tie_word_embeddings=family == 'qwen2', **common))
  m.save_pretrained(str(path))
  shutil.copyfile(os.path.join(hf_import.resolve('minilm'), 'tokenizer.json'),
                  os.path.join(str(path), 'tokenizer.json'))
  return str(path)


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
  root = tmp_path_factory.mktemp('tiny_decoders')
  return {f: _tiny(f, root / f) for f in ('gpt2', 'llama', 'qwen2')}


@pytest.fixture(scope='module')
def sciq_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp('sciq')
  rs = np.random.RandomState(0)
  words = ['water', 'heat', 'cell', 'energy', 'plant', 'light', 'sound', 'rock', 'gas', 'iron']
  for split, n in (('train', 40), ('test', 10)):
    with open(d / f'{split}.jsonl', 'w') as f:
      for i in range(n):
        w = rs.choice(words, 5)
        f.write(json.dumps(dict(question=f'What does {w[0]} need to {w[1]}?',
                                correct_answer=str(w[2]), distractor1=str(w[3]),
                                distractor2=str(w[4]), distractor3='nothing')) + '\n')
  return str(d)


def _debater_section(path, **kw):
  return dict(dict(model=dict(name='llama' if 'gpt2' not in path else 'gpt2', pretrained=path),
                   seeds=(0, 1), max_new_tokens=5, max_prompt_tokens=128, batch_size=8,
                   length_multiple=64,
                   temperature=1.0, top_p=0.95), **kw)


def _raw(n=5, offset=0):
  return {'id': np.arange(offset, offset + n, dtype=np.int64) * 3 + 1,
          'text': np.array([f'Q: what is {i}? A: {i + 1}' for i in range(offset, offset + n)],
                           dtype=object)}


@pytest.mark.parametrize('family', ['gpt2', 'llama', 'qwen2'])
def test_transcripts_are_kept_by_id_and_independent_of_the_batch(family, ckpts, tmp_path):
  mesh = sharding.make_mesh()
  opts = text_lib.DebaterOptions.from_section(_debater_section(ckpts[family]))
  debater = text_lib.Debater(opts, mesh)
  store = text_lib.TranscriptStore(str(tmp_path), opts, 'debate', 0, {'name': 'toy'})
  first = store.get(_raw(3), lambda: debater)
  assert store.generated == 3 and store.new_tokens > 0
  turns = first['turns']
  assert turns.shape == (3, 3)
  for i in range(3):  # three turns, A's side a coin, B the other side
    text = first['transcript'][i]
    side = text_lib.SIDES[first['side'][i]]
    other = text_lib.SIDES[1 - first['side'][i]]
    assert text.startswith(f'Debater A (arguing the answer is {side}): ')
    assert f'Debater B (arguing the answer is {other}): ' in text
    assert text.count('Debater A') == 2
  # more examples, another batch size: only the 2 new ones are generated; the first 3 examples,
  # now in other batches, keep their transcripts (a key per example and turn)
  opts4 = text_lib.DebaterOptions.from_section(_debater_section(ckpts[family], batch_size=16))
  assert opts4.spec('debate') == opts.spec('debate')
  grown = text_lib.TranscriptStore(str(tmp_path), opts4, 'debate', 0, {'name': 'toy'})
  assert grown.dir == store.dir
  both = grown.get(_raw(5), lambda: text_lib.Debater(opts4, mesh))
  assert grown.generated == 2
  assert list(both['transcript'][:3]) == list(first['transcript'])
  regen = text_lib.TranscriptStore(str(tmp_path / 'fresh'), opts4, 'debate', 0, {'name': 'toy'})
  fresh = regen.get(_raw(5), lambda: text_lib.Debater(opts4, mesh))
  np.testing.assert_array_equal(fresh['turns'], both['turns'])
  # a rerun reads the parts and never builds the debater
  again = text_lib.TranscriptStore(str(tmp_path), opts, 'debate', 0, {'name': 'toy'})
  out = again.get(_raw(5), lambda: pytest.fail('a rerun must not generate'))
  assert again.generated == 0 and list(out['transcript']) == list(both['transcript'])
  # another debate seed is another store with other draws
  other = text_lib.TranscriptStore(str(tmp_path), opts, 'debate', 1, {'name': 'toy'})
  assert other.dir != store.dir
  assert list(other.get(_raw(3), lambda: debater)['turns'][:, 0]) != list(turns[:, 0])


def test_a_sharded_debater_writes_the_same_transcripts(ckpts, tmp_path):
  """partition='fsdp' over 8 devices (mesh data 1 x fsdp 8): the embedding and LM head split,
  the same tokens as the replicated debater (layout never changes a result)."""
  section = _debater_section(ckpts['llama'])
  repl = text_lib.DebaterOptions.from_section(section)
  fsdp = text_lib.DebaterOptions.from_section(dict(section, partition='fsdp'))
  mesh = sharding.make_mesh(8, {'data': 1, 'fsdp': 8, 'tensor': 1})
  d = text_lib.Debater(fsdp, mesh)
  emb = [v for k, v in __import__('flax').traverse_util.flatten_dict(d.params).items()
         if v.size * 4 >= 1 << 20]
  assert emb and all(not v.sharding.is_fully_replicated for v in emb)
  a = text_lib.TranscriptStore(str(tmp_path / 'a'), repl, 'debate', 0, {'name': 'toy'}).get(
      _raw(4), lambda: text_lib.Debater(repl, sharding.make_mesh()))
  b = text_lib.TranscriptStore(str(tmp_path / 'b'), fsdp, 'debate', 0, {'name': 'toy'}).get(
      _raw(4), lambda: d)
  np.testing.assert_array_equal(a['turns'], b['turns'])
  with pytest.raises(UserError, match='debate.partition'):
    text_lib.DebaterOptions.from_section(dict(section, partition='zero'))


def test_consultancy_is_one_argument(ckpts, tmp_path):
  opts = text_lib.DebaterOptions.from_section(_debater_section(ckpts['qwen2']))
  store = text_lib.TranscriptStore(str(tmp_path), opts, 'consultancy', 0, {'name': 'toy'})
  out = store.get(_raw(4), lambda: text_lib.Debater(opts, sharding.make_mesh()))
  assert out['turns'].shape == (4, 1)
  assert all(t.startswith('Consultant (arguing the answer is ') for t in out['transcript'])
  sides = text_lib.first_side(np.arange(2000), 0)
  assert 0.45 < sides.mean() < 0.55  # a fair coin per example
  assert (text_lib.first_side(np.arange(2000), 1) != sides).mean() > 0.4


def test_transcript_is_cut_before_the_question_and_answer():
  tok = os.path.join(hf_import.resolve('minilm'), 'tokenizer.json')
  raw = _raw(2)
  table = {'id': raw['id'], 'transcript': np.array(['argument ' * 300, 'short'], dtype=str)}
  aug = text_lib.with_transcript(raw, table)
  enc = tokenize_lib.tokenize(list(aug['text']), tok, 48, list(aug['text_pair']))
  plain = tokenize_lib.tokenize(list(raw['text']), tok, 48)
  n = int(plain['attention_mask'][0].sum()) - 1  # the question and answer, without [SEP]
  np.testing.assert_array_equal(enc['input_ids'][0, :n], plain['input_ids'][0, :n])
  assert enc['attention_mask'][0].sum() == 48  # the transcript filled the rest, cut at its end
  # a pair dataset (BoolQ: passage, question) keeps its question at the start of the 2nd segment
  pairs = dict(raw, text_pair=np.array(['Question: why?', 'Question: how?'], dtype=object))
  aug = text_lib.with_transcript(pairs, table)
  assert aug['text_pair'][1].startswith('Question: how?\n\nDebate transcript:\nshort')


def test_bad_debate_sections_are_one_clear_error(ckpts):
  path = ckpts['qwen2']
  with pytest.raises(UserError, match='fields are'):
    text_lib.DebaterOptions.from_section(_debater_section(
        path, prompts=dict(debate=('{question} {answer}',))))
  with pytest.raises(UserError, match='lacks {question}'):
    text_lib.DebaterOptions.from_section(_debater_section(path, prompts=dict(consultancy=('x',))))
  with pytest.raises(UserError, match='not a decoder'):
    text_lib.DebaterOptions.from_section(dict(model=dict(name='bert', pretrained='minilm')))
  with pytest.raises(UserError, match='unknown mode'):
    text_lib.DebaterOptions.from_section(_debater_section(path, prompts=dict(judge=('{question}',))))


def _config(ckpts, sciq_dir, tmp_path, *, frozen: bool, conditions, weak_family='gpt2'):
  c = ConfigDict()
  c.protocol = dict(name='text_debate')
  c.dataset = dict(name='sciq', path=sciq_dir, data_dir=str(tmp_path / 'tfds'))
  c.splits = dict(weak_fraction=0.5, val_fraction=0.2, balance=False)
  c.tokenizer = dict(tokenizer='minilm', max_length=64)
  c.seeds = (0,)
  train = lambda lr, steps: dict(optimizer=dict(name='adam', learning_rate=lr), batch_size=8,
                                 num_steps=steps, eval_every=4, select='best')
  if frozen:
    c.weak = dict(model=dict(name='gpt2', pretrained=ckpts[weak_family]), frozen=True,
                  loss=dict(name='xent'), train=train(1e-2, 8))
  else:
    c.weak = dict(model=dict(name='bow', size='small'), loss=dict(name='xent'),
                  train=train(1e-2, 8))
  c.strong = dict(model=dict(name='llama', pretrained=ckpts['qwen2']), frozen=True,
                  loss=dict(name='xent'), train=train(1e-2, 8))
  c.student_losses = {'xent': dict(name='xent')}
  c.debate = _debater_section(ckpts['llama'], max_new_tokens=4, batch_size=8)
  c.conditions = conditions
  c.eval_batch_size = 16
  c.log_every = 4
  c.checkpoint_every = 100
  c.keep_checkpoints = 1
  c.mesh = dict(num_devices=0)
  return c


def _stage_dirs(root):
  return sorted(glob.glob(os.path.join(root, 'stages', '*')))


@pytest.mark.slow
def test_text_debate_end_to_end_then_a_rerun_generates_nothing(ckpts, sciq_dir, tmp_path):
  from w2s import train
  c = _config(ckpts, sciq_dir, tmp_path, frozen=True, conditions=(
      'no_transcript', 'finetune_ensemble', 'consultancy', 'debate'))
  work = str(tmp_path / 'run')
  results = train.train_and_evaluate(c, work)
  names = [f'{k}/xent' for k in ('no_transcript', 'finetune_ensemble', 'consultancy', 'debate')]
  assert list(results['summary']) == names
  record = results['per_seed'][0]
  # 80 train + 20 test examples, every one with a transcript of each mode and seed
  n = record['n_weak_train'] + record['n_strong_train'] + record['n_val'] + record['n_test']
  assert n == 100
  assert results['transcripts']['generated_examples'] == 4 * n  # 2 modes x 2 seeds
  assert len(results['transcripts']['stores']) == 4
  for name in names:
    r = record[name]
    assert 0 <= r['acc_student'] <= 1 and 0 <= r['acc_ceiling'] <= 1
    # every PGR is against the plain weak model (the paper's reference); own accuracy kept too
    assert r['acc_weak'] == record['no_transcript/xent']['acc_weak']
    assert r['acc_weak_own'] == record['weak'][name.split('/')[0]]['acc_test']
  # the K vmapped debate members read different transcripts: their labels differ
  members = record['weak']['debate']['acc_test_members']
  assert len(members) == 2
  debate_stage = os.path.join(work, record_stage(work, 'weak_debate'))
  with np.load(os.path.join(debate_stage, 'outputs.npz')) as f:
    m = f['test_member_probs']
  assert m.shape == (20, 2, 2) and not np.allclose(m[:, 0], m[:, 1])
  for part in ('transcripts', 'weak models', 'ceiling', 'students'):
    assert results['timing_s'][part] >= 0
  stages = _stage_dirs(work)
  assert len(stages) == 4 + 1 + 4  # 4 weak labellings, the ceiling, 4 students
  again = train.train_and_evaluate(c, work)
  assert again['transcripts']['generated_examples'] == 0
  assert again['transcripts'].get('new_tokens') == 0
  assert _stage_dirs(work) == stages
  for key in ('acc_student', 'acc_weak', 'acc_weak_own', 'acc_ceiling'):  # read back, not rerun
    assert again['per_seed'][0]['debate/xent'][key] == record['debate/xent'][key]


def record_stage(work, kind):
  (d,) = [p for p in os.listdir(os.path.join(work, 'stages')) if p.startswith(kind + '-')]
  return os.path.join('stages', d)


@pytest.mark.slow
@pytest.mark.default_codegen  # compute-bound: XLA's default codegen
def test_fine_tuned_weak_members_train_one_after_the_other(ckpts, sciq_dir, tmp_path):
  from w2s import train
  c = _config(ckpts, sciq_dir, tmp_path, frozen=False, conditions=('debate',))
  work = str(tmp_path / 'run')
  results = train.train_and_evaluate(c, work)
  kinds = sorted(os.path.basename(p).rsplit('-', 2)[0] for p in _stage_dirs(work))
  assert kinds == ['ceiling', 'student_debate_xent', 'weak', 'weak_debate_d0', 'weak_debate_d1']
  assert list(results['summary']) == ['debate/xent']
  assert len(results['per_seed'][0]['weak']['debate']['acc_test_members']) == 2


def test_config_errors_are_one_line(ckpts, sciq_dir, tmp_path):
  from w2s.protocols import text_debate
  c = _config(ckpts, sciq_dir, tmp_path, frozen=True, conditions=('debate', 'judge'))
  with pytest.raises(UserError, match='conditions='):
    text_debate.check(c)
  c = _config(ckpts, sciq_dir, tmp_path, frozen=True, conditions=('debate',))
  c.weak.ensemble = dict(size=3)
  with pytest.raises(UserError, match='set by the protocol'):
    text_debate.check(c)
  c = _config(ckpts, sciq_dir, tmp_path, frozen=True, conditions=('debate',))
  c.chain = ()
  with pytest.raises(UserError, match="'chain'"):
    text_debate.check(c)


def test_the_config_file_resolves_against_real_files(ckpts, sciq_dir):
  import importlib.util
  from w2s.protocols import text_debate
  spec = importlib.util.spec_from_file_location(
      'w2s_debate', os.path.join(os.path.dirname(os.path.dirname(__file__)), 'configs',
                                 'w2s_debate.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config(f'task=sciq,data={sciq_dir},debater={ckpts["qwen2"]},weak={ckpts["gpt2"]},'
                     'runlocal,k=2')
  opts, dataset = text_debate.check(c)
  assert dataset.name == 'sciq' and opts.debate.seeds == (0, 1)
  assert len(opts.debate.prompts['debate']) == 3 and opts.conditions == text_debate.CONDITIONS
  with pytest.raises(UserError, match='debater=DIR'):
    mod.get_config(f'task=sciq,data={sciq_dir},weak={ckpts["gpt2"]}')
