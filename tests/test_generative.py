"""The generative (SFT) weak-to-strong protocol end to end on the tiny arithmetic world: results,
exact resume after SIGTERM in generation and in training, one more student trains only itself,
and bad input as one error line before anything trains."""
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from w2s import preemption, train
from w2s.data import splits
from w2s.errors import UserError
from w2s.generative import choices as choices_lib, sampling
from w2s.protocols import generative, generative_stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import w2s_sft  # noqa: E402


def _config(arg='runlocal', **updates):
  c = w2s_sft.get_config(arg)
  for k, v in updates.items():
    node, *path = k.split('.')
    target = c[node]
    for p in path[:-1]:
      target = target[p]
    if path:
      target[path[-1]] = v
    else:
      c[node] = v
  return c


def _run(workdir, config):
  return train.train_and_evaluate(config, str(workdir))


def _numbers(results):
  """The per-seed numbers as JSON text (NaN == NaN there: an undefined PGR compares equal)."""
  return json.dumps([{k: v for k, v in r.items() if k != 'stages'} for r in results['per_seed']],
                    sort_keys=True)


def _parts(root, family='generations'):
  return sorted(glob.glob(os.path.join(str(root), family, '*', 'part-*.npz')))


def _texts(root):
  out = {}
  for path in _parts(root):
    with np.load(path) as f:
      for i, t in zip(f['id'], f['texts']):
        out[(os.path.basename(os.path.dirname(path)), int(i))] = tuple(t)
  return out


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
  """(finished process, workdir) of configs/w2s_sft.py:runlocal run as a user runs it, every stage
  from scratch (read-only: a test that adds to it works on a copy)."""
  workdir = tmp_path_factory.mktemp('sft') / 'run'
  env = {**os.environ, 'PYTHONPATH': ROOT}
  proc = subprocess.run([sys.executable, '-m', 'w2s.main', '--config',
                         'configs/w2s_sft.py:runlocal', '--workdir', str(workdir)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  return proc, workdir


def _pretrained(workdir, cli_run):
  """`workdir` holding a copy of the finished run's two pretrain stages only: a run there trains
  every later stage itself (the pretrain stages are keyed by corpus, tokenizer and model alone)."""
  for stage in glob.glob(str(cli_run[1] / 'stages' / 'pretrain_*')):
    shutil.copytree(stage, os.path.join(str(workdir), 'stages', os.path.basename(stage)))
  return workdir


@pytest.mark.slow
def test_runlocal_cli_writes_exact_match_results(cli_run):
  proc, tmp_path = cli_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads((tmp_path / 'results.json').read_text())
  s = res['summary']['sft']
  for m in generative.METRICS:
    assert m in s
  rec = res['per_seed'][0]
  assert rec['n_test'] == 32 and 0.0 <= rec['sft']['acc_student'] <= 1.0
  assert rec['sft']['filter']['kept'] == rec['n_strong_train']  # filter 'none', one sample each
  assert set(rec['truncated']) == {'prompts', 'responses'}
  assert res['config']['smoke'] is True and 'SMOKE TEST' in proc.stdout
  kinds = {os.path.basename(os.path.dirname(p)).split('-')[0] for p in _parts(tmp_path)}
  assert kinds == {'weak', 'ceiling', 'student_sft'}
  assert len(glob.glob(str(tmp_path / 'stages' / 'pretrain_*' / 'done.json'))) == 2
  assert (tmp_path / 'accuracy.png').exists()


def test_preempted_generation_and_training_resume_to_identical_results(tmp_path, monkeypatch,
                                                                       cli_run):
  config = _config(**{'sampling.num_samples': 2, 'sampling.temperature': 0.8,
                      'filter.name': 'majority'})
  straight = _run(_pretrained(tmp_path / 'straight', cli_run), config)

  # 1. SIGTERM after the first generated batch of the first store: the finished part is kept
  calls = []
  real_rows = sampling.generate_rows

  def rows_then_sigterm(*a, **kw):
    out = real_rows(*a, **kw)
    calls.append(1)
    if len(calls) == 1:
      preemption._handler(signal.SIGTERM, None)
    return out
  monkeypatch.setattr(sampling, 'generate_rows', rows_then_sigterm)
  work = _pretrained(tmp_path / 'preempted', cli_run)
  try:
    with pytest.raises(preemption.Preempted):
      _run(work, config)
  finally:
    preemption.reset()
  monkeypatch.setattr(sampling, 'generate_rows', real_rows)

  # 2. SIGTERM as the student's training starts: it stops after its first step, checkpointed
  real_fit = generative_stages.fit_tokens

  def fit_then_sigterm(stage, *a, **kw):
    if stage.kind.startswith('student'):
      preemption._handler(signal.SIGTERM, None)
    return real_fit(stage, *a, **kw)
  monkeypatch.setattr(generative_stages, 'fit_tokens', fit_then_sigterm)
  try:
    with pytest.raises(preemption.Preempted, match='student_sft'):
      _run(work, config)
  finally:
    preemption.reset()
  monkeypatch.setattr(generative_stages, 'fit_tokens', real_fit)

  resumed = _run(work, config)
  assert _numbers(resumed) == _numbers(straight)
  assert _texts(work) == _texts(tmp_path / 'straight')  # every weak sample drawn identically


def test_one_more_student_trains_only_that_student(tmp_path, cli_run):
  # the CLI's finished runlocal workdir: this config's run there finds every stage done
  shutil.copytree(cli_run[1], tmp_path, dirs_exist_ok=True)
  first = _run(tmp_path, _config())
  before = {p: os.path.getmtime(p) for p in glob.glob(str(tmp_path / 'stages' / '*' / 'done.json'))}
  parts = {p: os.path.getmtime(p) for p in _parts(tmp_path)}
  second = _run(tmp_path, _config('runlocal,losses=sft+sft_sum'))
  after = glob.glob(str(tmp_path / 'stages' / '*' / 'done.json'))
  new = sorted(os.path.basename(os.path.dirname(p)).split('-')[0] for p in set(after) - set(before))
  assert new == ['student_sft_sum']
  assert all(os.path.getmtime(p) == t for p, t in before.items())  # nothing retrained
  assert all(os.path.getmtime(p) == t for p, t in parts.items())   # nothing regenerated
  assert json.dumps(second['per_seed'][0]['sft'], sort_keys=True) == json.dumps(
      first['per_seed'][0]['sft'], sort_keys=True)
  # val exact match of weak and ceiling, recounted by hand from their stored greedy val answers
  opts, dataset, *_ = generative.check(_config())
  val = splits.weak_to_strong(dataset, seed=0, **opts.splits).splits['val']
  texts = _texts(tmp_path)
  last = lambda t: (re.findall(r'\d+', str(t)) or [None])[-1]
  for kind in ('weak', 'ceiling'):
    (store,) = {d for d, _ in texts if d.split('-')[0] == kind}
    right = [last(texts[(store, int(i))][0]) == last(g) for i, g in zip(val['id'], val['answer'])]
    assert first['per_seed'][0]['sft'][f'acc_{kind}_val'] == pytest.approx(np.mean(right),
                                                                           rel=1e-12)
  assert len(val['id']) == first['per_seed'][0]['n_val'] == 16


@pytest.mark.parametrize('updates, match', [
    ({'weak.model': dict(name='bert', size='tiny')}, 'is not a decoder'),
    ({'template': 'q: {prompt} {nope}'}, "unknown field 'nope'"),
    ({'template': 'q: {prompt'}, 'brace'),
    ({'student_losses': {'x': dict(name='xent')}}, 'is a classification loss'),
    ({'answer': dict(field='answer', extractor='nope')}, 'unknown answer extractor'),
    ({'max_length': 4}, 'fill max_length'),
    ({'filter': dict(name='best')}, 'filter.name'),
    ({'answer': dict(field='answer', score='pick')}, "answer.score='pick'"),
    ({'answer': dict(field='answer', normalize='sum')}, "with answer.score='choices' only"),
    ({'answer': dict(field='answer', score='choices', normalize='max')}, 'answer.normalize'),
    ({'answer': dict(field='answer', score='choices')}, "needs the test field 'choices'"),
])
def test_bad_input_is_one_error_before_training(tmp_path, updates, match):
  with pytest.raises(UserError, match=match):
    generative.check(_config(**updates))
  assert not os.path.exists(tmp_path / 'stages')


def test_an_extractor_that_matches_no_weak_generation_is_refused(tmp_path, cli_run):
  config = _config(answer=dict(field='answer', extractor=r'regex:zz(\d+)'))
  with pytest.raises(UserError, match='matched none of'):
    _run(_pretrained(tmp_path, cli_run), config)
  assert not glob.glob(str(tmp_path / 'stages' / 'student_*' / 'done.json'))


def test_choice_scoring_reports_each_models_log_prob_pick(tmp_path, monkeypatch, cli_run):
  """answer.score='choices' on the arithmetic 'choice' view: every accuracy in the results is the
  share of test (or val) rows where that model's highest-log-prob candidate is the gold one."""
  calls = []
  real = choices_lib.score_choices

  def recorded(module, params, prompts, cands, *a, **kw):
    out = real(module, params, prompts, cands, *a, **kw)
    calls.append((len(prompts), out['choice'], out['num_truncated']))
    return out
  monkeypatch.setattr(choices_lib, 'score_choices', recorded)
  config = _config('runlocal,score=choices')
  res = _run(_pretrained(tmp_path, cli_run), config)
  rec = res['per_seed'][0]
  opts, dataset, *_ = generative.check(config)
  parts = splits.weak_to_strong(dataset, seed=0, **opts.splits).splits
  test, val = parts['test'], parts['val']
  # order: weak and ceiling on test, weak and ceiling on val, the student on test
  assert [n for n, _, _ in calls] == [len(test['id'])] * 2 + [len(val['id'])] * 2 + [
      len(test['id'])]
  acc = lambda c, raw: float(np.mean(c == np.asarray(raw['label'])))
  picks = [c for _, c, _ in calls]
  got = rec['sft']
  assert got['acc_weak'] == pytest.approx(acc(picks[0], test), rel=1e-6)
  assert got['acc_ceiling'] == pytest.approx(acc(picks[1], test), rel=1e-6)
  assert got['acc_weak_val'] == pytest.approx(acc(picks[2], val), rel=1e-6)
  assert got['acc_ceiling_val'] == pytest.approx(acc(picks[3], val), rel=1e-6)
  assert got['acc_student'] == pytest.approx(acc(picks[4], test), rel=1e-6)
  assert got['agreement'] == pytest.approx(float(np.mean(picks[0] == picks[4])), rel=1e-6)
  assert rec['truncated']['choices'] == sum(t for _, _, t in calls) == 0
