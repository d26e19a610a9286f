"""A tiny end-to-end weak-to-strong run: every stage, several losses, results and plots, rerun skips."""
import json
import os

import numpy as np
import pytest

from w2s import train

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def _config(arg):
  import importlib.util
  spec = importlib.util.spec_from_file_location('w2s_offline', os.path.join(CONFIGS, 'w2s_offline.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_tiny_run_writes_results_and_rerun_skips_every_stage(tmp_path, capsys):
  config = _config('runlocal,seeds=2,losses=xent+logconf+reliability')
  with config.unlocked():
    config.weak.ensemble = dict(size=2, bagging=True)   # reliability reads the members' votes
  results = train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr()
  assert set(results['summary']) == {'xent', 'logconf', 'reliability'}
  assert len(results['per_seed']) == 2
  for name in ('results.json', 'accuracy.png', 'pgr.png'):
    assert os.path.getsize(tmp_path / name) > 0
  saved = json.load(open(tmp_path / 'results.json'))
  first = saved['per_seed'][0]
  for loss in ('xent', 'logconf', 'reliability'):
    r = first[loss]
    assert 0.0 <= r['acc_student'] <= 1.0 and 0.0 <= r['agreement'] <= 1.0
    assert r['n_weak_wrong'] + r['n_weak_right'] == first['n_test']
    # PGR is a number exactly when the ceiling beats the weak model; otherwise said so
    defined = r['acc_ceiling'] - r['acc_weak'] > 1e-6
    assert (r['pgr_undefined'] is None) == defined
    if defined:
      expected = (r['acc_student'] - r['acc_weak']) / (r['acc_ceiling'] - r['acc_weak'])
      assert r['pgr'] == pytest.approx(expected)
  assert 'weak-to-strong results over 2 seeds' in out.out
  # one weak ensemble + ceiling + three students per seed
  stages = os.listdir(tmp_path / 'stages')
  assert len(stages) == 2 * 5 and all(os.path.exists(tmp_path / 'stages' / s / 'done.json')
                                       for s in stages)
  members = np.load(tmp_path / 'stages' / [s for s in stages if s.startswith('weak-')][0] /
                    'outputs.npz')['strong_train_member_probs']
  assert members.shape[1:] == (2, 2)

  again = train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr()
  assert out.out.count('done earlier, skipped') == 10
  assert '] 1/' not in out.err  # no training or labelling progress at all
  assert again['per_seed'] == json.loads(json.dumps(results['per_seed']))


def test_students_share_one_set_of_weak_labels(tmp_path, capsys):
  """A second student loss added later trains only that student."""
  train.train_and_evaluate(_config('runlocal,seeds=1,losses=xent'), str(tmp_path))
  capsys.readouterr()
  train.train_and_evaluate(_config('runlocal,seeds=1,losses=xent+gce'), str(tmp_path))
  out = capsys.readouterr().out
  assert out.count('done earlier, skipped') == 3  # weak, ceiling, xent student
  assert len(os.listdir(tmp_path / 'stages')) == 4


@pytest.mark.slow
def test_bootstrapping_chain_and_relabel_rounds(tmp_path, capsys):
  """weak -> intermediate -> strong student, then one strong-to-strong relabelling round."""
  config = _config('runlocal,seeds=1,losses=xent')
  with config.unlocked():
    config.chain = (dict(model=dict(name='bow', size='base'), loss=dict(name='xent'),
                         train=config.weak.train.to_dict()),)
    config.relabel_rounds = 1
  results = train.train_and_evaluate(config, str(tmp_path))
  kinds = sorted(s.split('-')[0] for s in os.listdir(tmp_path / 'stages'))
  assert kinds == ['ceiling', 'chain0', 'student_xent', 'student_xent_round1', 'weak']
  assert np.isfinite(results['per_seed'][0]['xent']['acc_student'])
  # the intermediate's labels, not the weak model's, taught the first student
  chain = [s for s in os.listdir(tmp_path / 'stages') if s.startswith('chain0')][0]
  weak = [s for s in os.listdir(tmp_path / 'stages') if s.startswith('weak')][0]
  student = json.load(open(tmp_path / 'stages' /
                           [s for s in os.listdir(tmp_path / 'stages') if s.startswith('student_xent-')][0] /
                           'done.json'))
  assert chain.split('-')[1] in json.dumps(student['spec'])
  assert weak.split('-')[1] not in json.dumps(student['spec'])
  capsys.readouterr()
