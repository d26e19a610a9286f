"""The preference protocol (w2s/protocols/preference.py, configs/w2s_preference.py): pairwise scores
by hand, the runlocal run end to end through the CLI (results, stores kept by id, a rerun that
trains only a new student), and --dry_run refusing losses a student cannot train."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from w2s.protocols import preference_results as pr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'w2s_preference.py')


def _run(workdir, arg, *extra):
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'  # pair batches sharded, cheaply
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


def test_runlocal_end_to_end_and_rerun_with_one_more_student(tmp_path):
  workdir = str(tmp_path / 'pref')
  first = _run(workdir, 'runlocal,losses=dpo+rm')
  assert first.returncode == 0, first.stderr[-3000:]
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


def test_sigterm_in_reference_logprobs_and_dpo_training_resumes_identically(tmp_path, monkeypatch):
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
  straight = numbers(train.train_and_evaluate(config, str(tmp_path / 'straight')))

  real_get = by_id_store.ByIdStore.get

  def get_then_sigterm(self, raw, produce, **kw):
    def produce_then_sigterm(sub):
      out = produce(sub)
      if self.family == 'ref_logp':
        preemption._handler(signal.SIGTERM, None)
      return out
    return real_get(self, raw, produce_then_sigterm, **kw)
  monkeypatch.setattr(by_id_store.ByIdStore, 'get', get_then_sigterm)
  work = str(tmp_path / 'preempted')
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
