"""Labelling functions + a label model as the weak role of weak-to-strong (w2s/protocols/
programmatic.py, configs/w2s_lf.py): end to end on Rotten Tomatoes (tiny student), the labels of B
fitted on the train side only, the stage reused on rerun and keyed by the label model, and bad
sections as one UserError line."""
import json
import os

import numpy as np
import pytest

from w2s import label_models, labelling_functions as lf, options, scores, train
from w2s.configs import w2s_lf
from w2s.data import base, splits as splits_lib
from w2s.errors import UserError
from w2s.protocols import programmatic, weak_to_strong


def _stage(workdir, kind):
  dirs = [d for d in os.listdir(workdir / 'stages') if d.startswith(f'{kind}-')]
  assert len(dirs) == 1, dirs
  return workdir / 'stages' / dirs[0]


@pytest.mark.usefixtures('shared_feature_cache')  # the tiny BERT's features, shared
def test_rules_label_b_for_the_student_and_the_stage_is_reused(tmp_path, capsys):
  config = w2s_lf.get_config('runlocal,seeds=1,losses=xent,label_model=majority')
  results = train.train_and_evaluate(config, str(tmp_path))
  capsys.readouterr()
  seed = results['per_seed'][0]
  r = seed['xent']
  assert 0 <= r['acc_weak'] <= 1 and 0 <= r['acc_student'] <= 1 and 0 <= r['acc_ceiling'] <= 1
  weak_dir = _stage(tmp_path, 'weak')
  out = dict(np.load(weak_dir / 'outputs.npz'))
  done = json.load(open(weak_dir / 'done.json'))
  assert done['spec'][1]['labelling_functions'] == lf.load('rotten_tomatoes').spec()
  assert done['spec'][1]['label_model'] == {'name': 'majority'}
  assert 'checkpoints' not in os.listdir(weak_dir)  # nothing trained

  # B's labels: majority vote fitted on the train side's votes (A, B, val), test never in it
  dataset = options.build(options.plugin('datasets', config.dataset, 'dataset'), 'dataset')
  parts = splits_lib.weak_to_strong(dataset, seed=0, **config.splits.to_dict()).splits
  side = base.concat([parts['weak_train'], parts['strong_train'], parts['val']])
  votes = lf.vote_matrix(lf.load('rotten_tomatoes'), list(side['text']), num_classes=2)
  p = options.plugin('label_models', dict(name='majority'), 'lm')
  expected, diag = label_models.run(p, votes, 2)
  n_a, n_b = len(parts['weak_train']['id']), len(parts['strong_train']['id'])
  np.testing.assert_array_equal(out['strong_train_id'], parts['strong_train']['id'])
  np.testing.assert_allclose(out['strong_train_probs'], expected[n_a:n_a + n_b], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_array_equal(out['strong_train_votes'], votes[n_a:n_a + n_b])
  assert out['strong_train_votes'].shape == (n_b, len(lf.load('rotten_tomatoes').names))
  silent = (out['strong_train_votes'] == lf.ABSTAIN).all(1)
  assert 0 < silent.sum() < n_b  # all-abstain rows get the prior, and count like any row
  np.testing.assert_allclose(out['strong_train_probs'][silent], np.broadcast_to(
      diag['prior'], (silent.sum(), 2)), atol=1e-6)
  # the weak accuracy is the posterior's argmax on every test row, as for a trained weak model
  labels = parts['test']['label']
  assert r['acc_weak'] == pytest.approx(scores.accuracy(out['test_probs'], labels))
  covered = (out['test_votes'] != lf.ABSTAIN).any(1)
  report = seed['weak_labels']
  assert report['coverage']['test'] == pytest.approx(covered.mean())
  assert report['accuracy']['test'] == pytest.approx(r['acc_weak'])
  assert report['accuracy_covered']['test'] == pytest.approx(
      scores.accuracy(out['test_probs'][covered], labels[covered]))
  assert seed['held_out']['weak']['val_accuracy'] == pytest.approx(
      scores.accuracy(out['val_probs'], parts['val']['label']), abs=1e-6)
  # the student learned from these labels: its stage is keyed by the weak stage
  student = json.load(open(_stage(tmp_path, 'student_xent') / 'done.json'))
  assert weak_dir.name.split('-')[-1] in json.dumps(student['spec'])

  again = train.train_and_evaluate(config, str(tmp_path))
  log = capsys.readouterr()
  assert log.out.count('done earlier, skipped') == 3 and 'labelling functions' not in log.err
  assert train._json_safe(again['per_seed']) == train._json_safe(results['per_seed'])

  # another label model: a new weak stage (and student); the ceiling is shared
  train.train_and_evaluate(w2s_lf.get_config('runlocal,seeds=1,losses=xent'), str(tmp_path))
  assert capsys.readouterr().out.count('done earlier, skipped') == 1
  assert len(os.listdir(tmp_path / 'stages')) == 5


def _config(**weak):
  c = w2s_lf.get_config('runlocal,seeds=1,losses=xent')
  with c.unlocked():
    c.weak = dict(labelling_functions='rotten_tomatoes', label_model=dict(name='dawid_skene'))
    for k, v in weak.items():
      if v is None:
        del c.weak[k]
      else:
        c.weak[k] = v
  return c


@pytest.mark.parametrize('weak, match', [
    (dict(loss=dict(name='xent')), "weak: 'loss' does not go with labelling_functions"),
    (dict(label_model=None), r"weak.label_model is required with labelling_functions, e.g. "
                             r"weak.label_model=dict\(name='dawid_skene'\)"),
    (dict(labeling_functions='x'), "weak: unknown key 'labeling_functions' "
                                   r"\(did you mean 'labelling_functions'\?\)"),
    (dict(label_model=dict(name='dawid_skene', iters=3)),
     "weak.label_model: label model 'dawid_skene' has no option 'iters'"),
    (dict(label_model=dict(name='snorkel')), "unknown label model 'snorkel'; known: dawid_skene"),
    (dict(labelling_functions='nope'), "weak.labelling_functions: no labelling-function module"),
])
def test_bad_weak_sections_are_one_user_error(weak, match):
  with pytest.raises(UserError, match=match) as e:
    weak_to_strong.check(_config(**weak))
  assert '\n' not in str(e.value)


def test_rules_for_other_classes_or_inputs_are_refused(tmp_path):
  path = tmp_path / 'flipped.py'
  path.write_text('LABEL_NAMES = ("fresh", "rotten")\ndef f(t):\n  return 0\n'
                  'LABELLING_FUNCTIONS = [f]\n')
  with pytest.raises(UserError, match=r"are written for classes \['fresh', 'rotten'\], but "
                                      r"'rotten_tomatoes' has \['rotten', 'fresh'\]"):
    weak_to_strong.check(_config(labelling_functions=str(path)))
  with pytest.raises(UserError, match='labelling functions read text, but the dataset'):
    programmatic.Options.from_section(
        'weak', dict(labelling_functions='rotten_tomatoes', label_model=dict(name='majority')),
        input_kind='image')
