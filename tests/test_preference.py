"""The preference protocol (w2s/protocols/preference.py, configs/w2s_preference.py): pairwise scores
by hand, the runlocal run end to end through the CLI (results, stores kept by id, a rerun that
trains only a new student), and --dry_run refusing losses a student cannot train."""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import xla_test_flags  # tests/xla_test_flags.py
from w2s.protocols import preference_results as pr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'w2s_preference.py')


def _run(workdir, arg, *extra):
  env = dict(os.environ)
  env['XLA_FLAGS'] = xla_test_flags.xla_flags(2)  # pair batches sharded, cheaply
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = REPO
  cmd = [sys.executable, '-m', 'w2s.main', f'--config={CONFIG}:{arg}', *extra]
  if workdir is not None:
    cmd.append(f'--workdir={workdir}')
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=REPO)


def test_pairwise_scores_by_hand():
  logp = np.array([[-3.0, -5.0], [-4.0, -2.0], [-1.0, -1.5], [-2.0, -2.0]])
  ref = np.array([[-2.0, -5.5], [-4.5, -2.0], [-0.5, -2.5], [-2.5, -1.0]])
  # log-ratios: [-1, 0.5] -> 1; [0.5, 0] -> 0; [-0.5, 1] -> 1; [0.5, -1] -> 0
  gold = np.array([1, 1, 1, 0])
  np.testing.assert_array_equal(pr.policy_pair_correct(logp, ref, gold), [1.0, 0.0, 1.0, 1.0])
  np.testing.assert_array_equal(pr.policy_pair_correct(logp, ref, gold, beta=0.1),
                                [1.0, 0.0, 1.0, 1.0])  # beta > 0 never changes the preference
  np.testing.assert_allclose(pr.implicit_rewards(logp, ref, 0.1)[0], [-0.1, 0.05], rtol=1e-12)
  np.testing.assert_array_equal(pr.preferred([[1.0, 1.0], [0.0, 2.0]]), [0, 1])  # tie -> 0
  r = np.array([[0.3, -0.2], [1.0, 4.0]])
  soft = pr.soft_preference(r)
  np.testing.assert_allclose(soft[:, 0], 1 / (1 + np.exp(-(r[:, 0] - r[:, 1]))), rtol=1e-6)
  np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)

  weak = np.array([0, 0, 1, 1, 0])
  gold = np.array([0, 1, 1, 0, 0])       # the judge is right on rows 0, 2, 4, wrong on 1, 3
  student = np.array([0, 1, 0, 1, 0])    # right on 0, 1, 4
  s = pr.score(weak, student, gold, acc_ceiling=0.9)
  assert s['acc_weak'] == pytest.approx(0.6) and s['acc_student'] == pytest.approx(0.6)
  assert s['acc_weak_right'] == pytest.approx(2 / 3) and s['acc_weak_wrong'] == pytest.approx(0.5)
  assert s['weak_right_minus_wrong'] == pytest.approx(2 / 3 - 0.5)
  assert s['agreement'] == pytest.approx(0.6) and s['pgr'] == pytest.approx(0.0)
  assert pr.score(weak, gold, gold, 0.9)['pgr'] == pytest.approx(0.4 / 0.3)


def _mtimes(workdir):
  paths = glob.glob(os.path.join(workdir, '*', '*', 'part-*.npz'))
  paths += glob.glob(os.path.join(workdir, 'stages', '*', 'done.json'))
  return {os.path.relpath(p, workdir): os.stat(p).st_mtime_ns for p in paths}


def _stored(workdir, family, name):
  parts = sorted(glob.glob(os.path.join(workdir, family, f'{name}-*', 'part-*.npz')))
  assert parts, f'no {family}/{name} store'
  loaded = [np.load(p) for p in parts]
  return (np.concatenate([f['id'] for f in loaded]),
          np.concatenate([f['scores'] for f in loaded]))


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
  """(finished process, workdir) of runlocal,losses=dpo+rm through the CLI, every stage from
  scratch (read-only: later runs work on a copy)."""
  workdir = str(tmp_path_factory.mktemp('pref') / 'first')
  return _run(workdir, 'runlocal,losses=dpo+rm'), workdir


def _pretrained(workdir, first_run):
  """`workdir` holding a copy of the first run's two pretrain stages only (keyed by corpus,
  tokenizer and model alone): a run there trains every later stage itself."""
  for stage in glob.glob(os.path.join(first_run[1], 'stages', 'pretrain_*')):
    shutil.copytree(stage, os.path.join(workdir, 'stages', os.path.basename(stage)))
  return workdir


def test_runlocal_end_to_end_and_rerun_with_one_more_student(tmp_path, first_run):
  first, fresh = first_run
  assert first.returncode == 0, first.stderr[-3000:]
  workdir = str(tmp_path / 'pref')
  shutil.copytree(fresh, workdir)
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['protocol'] == 'preference'
  assert results['kinds'] == {'dpo': 'policy', 'rm': 'reward_model'}
  record = results['per_seed'][0]
  for name in ('dpo', 'rm'):
    r = record[name]
    assert 0.0 <= r['acc_student'] <= 1.0 and 'pgr' in r and 'pgr_undefined' in r
    assert r['acc_weak'] == record['judge']['acc_test']
    assert r['n_weak_right'] + r['n_weak_wrong'] == record['n_test']
    assert 'weak_right_minus_wrong' in results['summary'][name]
  assert 'Super(ficial)-alignment' in first.stdout
  for fig in ('accuracy', 'pgr', 'weak_split', 'curves'):
    assert os.path.isfile(os.path.join(workdir, f'{fig}.png'))

  # the reported accuracies are the stored test scores against the gold pairs, by id
  from w2s.configs import w2s_preference
  from w2s.data import arithmetic
  cfg = w2s_preference.get_config('runlocal').dataset.to_dict()
  test = arithmetic.load(**{k: v for k, v in cfg.items() if k != 'name'}).splits['test']
  gold = dict(zip(test['id'].tolist(), test['label'].tolist()))
  ids, rewards = _stored(workdir, 'rewards', 'student_rm')
  assert len(ids) == record['n_test']
  y = np.array([gold[i] for i in ids.tolist()])
  assert np.mean(pr.preferred(rewards) == y) == pytest.approx(record['rm']['acc_student'])
  ids, logp = _stored(workdir, 'logp', 'student_dpo')
  ref_ids, ref = _stored(workdir, 'ref_logp', 'reference')
  assert len(np.unique(ref_ids)) == len(ref_ids)  # each pair's reference log-probs once
  by_id = dict(zip(ref_ids.tolist(), ref))
  correct = pr.policy_pair_correct(logp, np.stack([by_id[i] for i in ids.tolist()]),
                                   [gold[i] for i in ids.tolist()])
  assert correct.mean() == pytest.approx(record['dpo']['acc_student'])
  assert np.all(ref < 0)  # log-probabilities of real responses

  before = _mtimes(workdir)
  second = _run(workdir, 'runlocal,losses=dpo+rm+wdpo')
  assert second.returncode == 0, second.stderr[-3000:]
  after = _mtimes(workdir)
  assert {k: after[k] for k in before} == before  # nothing recomputed or rewritten
  new = sorted(set(after) - set(before))
  assert len(new) == 2 and all('student_wdpo' in p for p in new), new
  log = second.stdout + second.stderr  # progress lines go to stderr
  for line in ('[weak', '[ceiling', '[ref_logp', '[rewards', '[student_dpo', '[student_rm',
               '[pretrain'):
    assert line not in log, line
  assert '[student_wdpo' in log and '[logp student_wdpo' in log
  again = json.load(open(os.path.join(workdir, 'results.json')))['per_seed'][0]
  assert again['dpo'] == record['dpo'] and again['rm'] == record['rm']
  assert again['wdpo']['kind'] == 'policy'

  # judge=delta in the same workdir: the pretrain stages and the ceiling are reused (their keys
  # do not depend on the judge); the two weak SFT stages, their answers and the student are new
  _delta_run_in(workdir, test)


def _stored_texts(workdir, name):
  parts = sorted(glob.glob(os.path.join(workdir, 'generations', f'{name}-*', 'part-*.npz')))
  assert parts, f'no generations/{name} store'
  loaded = [np.load(p, allow_pickle=True) for p in parts]
  ids = np.concatenate([f['id'] for f in loaded])
  return dict(zip(ids.tolist(), np.concatenate([f['texts'] for f in loaded])[:, 0].tolist()))


def _delta_run_in(workdir, test):
  from w2s.configs import w2s_preference
  from w2s.data import arithmetic, splits
  from w2s.protocols import generative_stages as gs
  before = _mtimes(workdir)
  out = _run(workdir, 'runlocal,judge=delta,losses=dpo')
  assert out.returncode == 0, out.stderr[-3000:]
  log = out.stdout + out.stderr
  assert 'Delta pairs of B' in out.stdout
  config = w2s_preference.get_config('runlocal,judge=delta,losses=dpo')
  results = json.load(open(os.path.join(workdir, 'results.json')))
  for line in ('[pretrain_weak]', '[pretrain_strong', '[ceiling', '[ref_logp reference]'):
    assert line not in log, line
  for line in ('[pretrain_weak_small', '[weak,', '[weak_small,', '[generations weak]',
               '[generations weak_small]', '[ref_logp reference_delta]', '[student_dpo'):
    assert line in log, line
  assert all(_mtimes(workdir)[k] == t for k, t in before.items() if 'ceiling' in k)
  assert results['judge'] == 'delta'
  record = results['per_seed'][0]
  judge = record['judge']
  assert judge['n_pairs_b'] + judge['n_identical_b'] == record['n_strong_train']
  # the reported shares by hand: B's gold answers against the stored greedy answers, by id
  cfg = config.dataset.to_dict()
  data = arithmetic.load(**{k: v for k, v in cfg.items() if k != 'name'})
  b = splits.weak_to_strong(data, seed=0, **config.splits.to_dict()).splits['strong_train']
  large, small = _stored_texts(workdir, 'weak'), _stored_texts(workdir, 'weak_small')
  kept = [i for i in b['id'].tolist() if large[i] != small[i]]
  assert len(kept) == judge['n_pairs_b']
  gold = dict(zip(b['id'].tolist(), b['answer'].tolist()))
  right = lambda texts: gs.exact_match([texts[i] for i in kept], [gold[i] for i in kept],
                                       'last_number')
  assert judge['chosen_correct'] == pytest.approx(right(large).mean())
  assert judge['rejected_correct'] == pytest.approx(right(small).mean())
  # the judge's test predictions: log p_weak - log p_weak_small of the gold test pairs
  ids, lw = _stored(workdir, 'logp', 'weak')
  ids_s, ls = _stored(workdir, 'logp', 'weak_small')
  np.testing.assert_array_equal(ids, ids_s)
  y = dict(zip(test['id'].tolist(), test['label'].tolist()))
  assert np.mean(pr.preferred(lw - ls) == [y[i] for i in ids.tolist()]) == pytest.approx(
      judge['acc_test'])
  # the Delta pairs' reference log-probs are their own (other responses than the gold pairs')
  ref_ids, _ = _stored(workdir, 'ref_logp', 'reference_delta')
  assert set(kept) <= set(ref_ids.tolist())


@pytest.mark.parametrize('arg, extra, says', [
    ('runlocal,losses=dpo+rm', ('--config.student_kinds.rm=policy',), "'bradley_terry' is a "
     'classification loss'),
    ('runlocal,losses=dpo+no_such_loss', (), "unknown loss 'no_such_loss'"),
])
def test_dry_run_refuses_a_loss_the_student_cannot_train(arg, extra, says):
  out = _run(None, arg, '--dry_run', *extra)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and says in errors[0], out.stderr[-2000:]


@pytest.mark.parametrize('arg, key, value, says', [
    ('runlocal,losses=sft', None, None, "'sft' is a sequence (SFT) loss but this stage trains "
     'with a preference-pair loss'),
    ('runlocal', 'max_length', 200, "exceeds weak's 128 positions"),
    ('runlocal', 'max_length', 12, 'prompts fill max_length=12'),
])
def test_check_refuses_what_cannot_run(arg, key, value, says):
  from w2s.configs import w2s_preference
  from w2s.errors import UserError
  from w2s.protocols import preference
  config = w2s_preference.get_config(arg)
  if key is not None:
    config[key] = value
  with pytest.raises(UserError) as e:
    preference.check(config)
  assert says in str(e.value) and '\n' not in str(e.value)


def test_sigterm_in_reference_logprobs_and_dpo_training_resumes_identically(tmp_path, monkeypatch,
                                                                            first_run):
  """SIGTERM while the reference log-probs are stored, then as the DPO student starts training:
  each run stops (Preempted: exit 143 from the CLI), and the rerun ends with the numbers of an
  uninterrupted run."""
  import signal
  sys.path.insert(0, REPO)
  from configs import w2s_preference
  from w2s import preemption, train
  from w2s.protocols import by_id_store, generative_stages
  config = w2s_preference.get_config('runlocal,losses=dpo')
  numbers = lambda r: json.dumps([{k: v for k, v in s.items() if k != 'stages'}
                                  for s in r['per_seed']], sort_keys=True)
  straight = numbers(train.train_and_evaluate(
      config, _pretrained(str(tmp_path / 'straight'), first_run)))

  real_get = by_id_store.ByIdStore.get

  def get_then_sigterm(self, raw, produce, **kw):
    def produce_then_sigterm(sub):
      out = produce(sub)
      if self.family == 'ref_logp':
        preemption._handler(signal.SIGTERM, None)
      return out
    return real_get(self, raw, produce_then_sigterm, **kw)
  monkeypatch.setattr(by_id_store.ByIdStore, 'get', get_then_sigterm)
  work = _pretrained(str(tmp_path / 'preempted'), first_run)
  try:
    with pytest.raises(preemption.Preempted):
      train.train_and_evaluate(config, work)
  finally:
    preemption.reset()
  monkeypatch.setattr(by_id_store.ByIdStore, 'get', real_get)
  assert glob.glob(os.path.join(work, 'ref_logp', '*', 'part-*.npz'))  # the finished part kept

  real_fit = generative_stages.fit_tokens

  def fit_then_sigterm(stage, *a, **kw):
    if stage.kind == 'student_dpo':
      preemption._handler(signal.SIGTERM, None)
    return real_fit(stage, *a, **kw)
  monkeypatch.setattr(generative_stages, 'fit_tokens', fit_then_sigterm)
  try:
    with pytest.raises(preemption.Preempted, match='student_dpo'):
      train.train_and_evaluate(config, work)
  finally:
    preemption.reset()
  monkeypatch.setattr(generative_stages, 'fit_tokens', real_fit)
  assert numbers(train.train_and_evaluate(config, work)) == straight


def test_delta_pairs_by_hand():
  from w2s.protocols import preference_delta as delta
  raw = {'id': np.array([7, 8, 9, 10]), 'prompt': np.array(['p7', 'p8', 'p9', 'p10'], object),
         'answer': np.array([' 5', ' 6', ' 7', ' 8'], object), 'label': np.array([1, 1, 1, 1])}
  large, small = [' 5', ' 6', ' 1', ' 9'], [' 4', ' 6', ' 7', ' 3']
  kept, counts = delta.pairs(raw, large, small, seed=2)
  assert counts == {'pairs': 3, 'identical': 1}  # id 8: both answer ' 6', dropped
  assert kept['id'].tolist() == [7, 9, 10] and kept['prompt'].tolist() == ['p7', 'p9', 'p10']
  for i, (row, y) in enumerate(zip((0, 2, 3), kept['label'])):
    pair = (kept['response_a'][i], kept['response_b'][i])
    assert pair[y] == large[row] and pair[1 - y] == small[row]  # label = index of the larger's
  again, _ = delta.pairs(raw, large, small, seed=2)
  np.testing.assert_array_equal(again['label'], kept['label'])  # the order is a function of id
  orders = {tuple(delta.pairs(raw, large, small, seed=s)[0]['label']) for s in range(8)}
  assert len(orders) > 1
  shares = delta.correct_shares(kept, [' 5', ' 7', ' 8'], 'last_number')
  # chosen (large) right on id 7 only; rejected (small) right on id 9 only
  assert shares == pytest.approx({'chosen_correct': 1 / 3, 'rejected_correct': 1 / 3,
                                  'delta_right': 1 / 3, 'delta_wrong': 1 / 3})


def test_delta_judge_config_errors():
  from w2s.configs import w2s_preference
  from w2s.errors import UserError
  from w2s.protocols import preference
  for arg, change, says in [
      ('runlocal,judge=delta', lambda c: c.__delitem__('weak_small'), 'judge \'delta\' needs '
       'weak_small'),
      ('runlocal', lambda c: c.__setitem__('weak_small', dict(c.weak)), 'weak_small is read only'),
      ('runlocal,judge=delta', lambda c: c.judge.__setitem__('answer', 'nope'),
       "judge.answer='nope' is not a field"),
      ('runlocal', lambda c: c.judge.__setitem__('name', 'oracle'), "judge.name='oracle'")]:
    config = w2s_preference.get_config(arg)
    with config.unlocked():
      change(config)
    with pytest.raises(UserError) as e:
      preference.check(config)
    assert says in str(e.value) and '\n' not in str(e.value), str(e.value)


def _hh_files(root):
  """A tiny HH-RLHF directory (helpful-base/{train,test}.jsonl): one-turn and multi-turn pairs, one
  prompt longer than the real config's max_prompt_length, one pair whose prompts differ."""
  long = ' '.join(f'word{i}' for i in range(400))
  turn = lambda *t: ''.join(f'\n\n{"Human" if i % 2 == 0 else "Assistant"}: {x}'
                            for i, x in enumerate(t))
  rows = [dict(chosen=turn(f'q{i}', f'good answer {i}'), rejected=turn(f'q{i}', f'bad {i}'))
          for i in range(6)]
  rows.append(dict(chosen=turn('2+2?', '5', 'sure?', 'no, 4'),
                   rejected=turn('2+2?', '5', 'sure?', 'yes')))
  rows.append(dict(chosen=turn(long, 'ok'), rejected=turn(long, 'no')))
  rows.append(dict(chosen=turn('a', 'x'), rejected=turn('b', 'y')))  # skipped: prompts differ
  for split, part in (('train', rows), ('test', rows[:3])):
    os.makedirs(os.path.join(root, 'helpful-base'), exist_ok=True)
    with open(os.path.join(root, 'helpful-base', f'{split}.jsonl'), 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in part)
  return root, [r['chosen'] + r['rejected'] for r in rows]


def _tiny_qwen2(root, tokenizer_file, layers, seed):
  """A tiny random Hugging Face Qwen2 checkpoint with the tokenizer beside it."""
  import shutil
  transformers = pytest.importorskip('transformers')
  torch = pytest.importorskip('torch')
  vocab = json.load(open(tokenizer_file))['model']['vocab']
  torch.manual_seed(seed)
  cfg = transformers.Qwen2Config(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=layers, num_attention_heads=2,
                                 num_key_value_heads=1, max_position_embeddings=1024,
                                 tie_word_embeddings=True)
  transformers.Qwen2ForCausalLM(cfg).eval().save_pretrained(root)
  shutil.copy(tokenizer_file, root)
  return root


def test_hh_real_path_dry_run_on_tiny_checkpoints(tmp_path, monkeypatch):
  """configs/w2s_preference.py:weak_ckpt=,strong_ckpt=,data= on HH files and tiny random Qwen2
  decoders: the accelerator sections, and what --dry_run checks passes; long prompts keep their
  last max_prompt_length tokens, counted."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from w2s import options
  from w2s.configs import w2s_preference
  from w2s.errors import UserError
  from w2s.generative import tokens
  from w2s.protocols import preference, preference_stages
  monkeypatch.setenv('W2S_DATA_DIR', str(tmp_path / 'tfds'))
  data, texts = _hh_files(str(tmp_path / 'hh'))
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=300, special_tokens=['<|endoftext|>'],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.save(str(tmp_path / 'tokenizer.json'))
  weak = _tiny_qwen2(str(tmp_path / 'weak'), str(tmp_path / 'tokenizer.json'), 1, 0)
  strong = _tiny_qwen2(str(tmp_path / 'strong'), str(tmp_path / 'tokenizer.json'), 2, 1)
  config = w2s_preference.get_config(f'weak_ckpt={weak},strong_ckpt={strong},data={data},'
                                     'lora=4,losses=dpo+rm')
  assert config.dataset.to_dict() == dict(name='anthropic_hh', path=data, mode='prompt_pairs')
  assert config.tokenizer == strong and config.template == '{prompt}' and config.corpus is None
  assert (config.weak.model.pretrained, config.strong.model.pretrained) == (weak, strong)
  assert config.weak.pretrain is None and config.strong.pretrain is None
  assert config.strong.model.lora.rank == 4 and config.strong.model.dtype == 'bfloat16'
  assert config.strong.train.partition == 'fsdp' and config.reward_train.partition == 'fsdp'
  assert config.mesh.shape.to_dict() == dict(fsdp=-1)
  assert (config.max_length, config.max_prompt_length) == (512, 384)
  proto, checked = options.check_protocol(config)  # what --dry_run runs: every section, the
  opts, dataset, _, _ = checked                      # data, the checkpoints
  assert proto.name == 'preference'
  assert dataset.notes['skipped_pairs']['train'] == {'prompts_differ': 1, 'identical_responses': 0}
  train = dataset.splits['train']
  enc = preference_stages.encode(opts, train)
  assert enc['truncated_prompts'] == 1 and enc['truncated_responses'] == 0
  row = int(np.flatnonzero([p.startswith('\n\nHuman: word0') for p in train['prompt']])[0])
  full = tok.encode(train['prompt'][row]).ids
  assert len(full) > 384 and enc['prompt_length'][row] == 384
  for k in range(2):  # the prompt's last 384 tokens, then the response
    np.testing.assert_array_equal(enc['input_ids'][row, k, :384], full[-384:])
  multi = int(np.flatnonzero([p.count('Assistant:') == 2 for p in train['prompt']])[0])
  assert train['prompt'][multi].endswith('\n\nHuman: sure?\n\nAssistant:')
  assert tokens.eos_id(strong) == tok.token_to_id('<|endoftext|>')
  # judge=delta on HH: both weak decoders SFT on the chosen turns (checked, not trained)
  config = w2s_preference.get_config(f'weak_ckpt={weak},strong_ckpt={strong},data={data},'
                                     f'judge=delta,weak_small_ckpt={weak},losses=dpo')
  assert config.judge.answer == 'chosen' and config.weak_small.model.pretrained == weak
  assert preference_stages.encode(preference.check(config)[0], train)['truncated_prompts'] == 1
  for arg, says in ((f'data={data}', 'weak_ckpt=DIR, strong_ckpt=DIR and data=DIR go together'),
                    (f'weak_ckpt={weak},strong_ckpt={strong},data={data},judge=delta',
                     'judge=delta and weak_small_ckpt=DIR go together')):
    with pytest.raises(UserError) as e:
      w2s_preference.get_config(arg)
    assert says in str(e.value) and '\n' not in str(e.value)
