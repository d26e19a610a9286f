"""`--dry_run` checks what the run will check: every plug-in a run builds is built with its
options and traced on the dataset's inputs (pseudo-label policies, label models, labelling
functions, splits, models and augmentations against the input shape), so a bad option is one
`error:` line naming its key before anything trains, not a crash after a round of training."""
import os

import pytest

from test_hardening import REPO, _cli, _one_error
from w2s.errors import UserError

CONFIGS = os.path.join(REPO, 'configs')


def _dry_run(config_arg, *overrides):
  return _cli(f'--config={os.path.join(CONFIGS, config_arg)}', '--dry_run', *overrides)


# case: (config file:arg, overrides, words the error line must hold: the key and the problem)
BAD = {
    'threshold tau': ('self_training.py:runlocal', ['--config.pseudo.select.tau=2.0'],
                      ['pseudo.select.tau=2.0', '[0, 1]']),
    'curriculum step': ('self_training.py:runlocal,select=curriculum',
                        ['--config.pseudo.select.step=-1'], ['pseudo.select.step=-1', '(0, 1]']),
    'topk k': ('self_training.py:runlocal,select=topk', ['--config.pseudo.select.k=0'],
               ['pseudo.select.k=0', '>= 1']),
    'dawid_skene abstain': ('w2s_lf.py:runlocal,abstain=whatever', [],
                            ['weak.label_model', "abstain='whatever'", "'skip'", "'model'"]),
    'weak_fraction': ('pixel_debate.py:runlocal', ['--config.splits.weak_fraction=1.5'],
                      ['splits', 'weak_fraction=1.5', '(0, 1)']),
    'image augmentation on vectors': ('ssl.py:runlocal', ['--config.dataset.name=digits'],
                                      ['model.train.weak_augment', "'translate'", 'rank 4']),
    'supervised image model on vectors': ('supervised.py:dataset=digits,model=cnn,runlocal', [],
                                          ['model: cnn', 'not images']),
    'w2s image model on vectors': ('w2s_offline.py:runlocal', ['--config.dataset.name=digits',
                                                               '--config.weak.model.name=cnn'],
                                   ['weak.model', 'cnn', 'not images']),
}


@pytest.mark.parametrize('case', list(BAD))
def test_dry_run_refuses_what_the_run_would_refuse(case):
  config, overrides, words = BAD[case]
  out = _dry_run(config, *overrides)
  _one_error(out, *words)
  assert out.stdout == ''  # no config printed as "checked"


def test_the_run_refuses_it_before_anything_trains(tmp_path):
  """The real run goes through the same check: the same line, and no stage started."""
  wd = tmp_path / 'wd'
  out = _cli(f'--config={CONFIGS}/self_training.py:runlocal,select=topk', f'--workdir={wd}',
             '--config.pseudo.select.k=0')
  _one_error(out, 'pseudo.select.k=0')
  assert not (wd / 'stages').exists()


def test_a_rules_file_that_is_not_a_python_module_is_one_line(tmp_path):
  rules = tmp_path / 'rules.txt'
  rules.write_text('positive if "great" in text\n')
  out = _dry_run(f'w2s_lf.py:runlocal,rules={rules}')
  _one_error(out, 'weak.labelling_functions', 'rules.txt', 'not a Python module', '.py',
             'LABELLING_FUNCTIONS')
  from w2s.main import _dry_run as dry_run
  with pytest.raises(UserError, match='weak.labelling_functions: .* is a directory'):
    dry_run(_config('w2s_lf.py', f'runlocal,rules={tmp_path}/'))


# --- the same checks in-process: valid configs pass them, bad options are caught ---------------

def _config(file, arg):
  import importlib.util
  spec = importlib.util.spec_from_file_location(file[:-3], os.path.join(CONFIGS, file))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.mark.parametrize('file, arg', [
    ('self_training.py', 'runlocal,noisy'), ('self_training.py', 'runlocal,select=curriculum'),
    ('self_training.py', 'runlocal,select=topk'), ('self_training.py', 'runlocal,select=all,soft'),
    ('self_training.py', 'runlocal,select=agreement'), ('self_training.py', 'task=rt,runlocal,noisy'),
    ('ssl.py', 'runlocal'), ('ssl.py', 'runlocal,algo=mean_teacher'),
    ('pixel_debate.py', 'runlocal'),
    ('w2s_lf.py', 'runlocal,abstain=model'), ('w2s_lf.py', 'runlocal,label_model=weighted'),
    ('w2s_lf.py', 'runlocal,label_model=majority'),
])
def test_valid_configs_pass_the_deeper_checks(file, arg):
  from w2s.main import _dry_run as dry_run
  assert 'nothing was trained' in dry_run(_config(file, arg))


@pytest.mark.parametrize('file, arg, key, value, message', [
    ('self_training.py', 'runlocal,select=agreement', 'pseudo.select.tau', 7.0,
     r'^pseudo\.select\.tau=7\.0 \(agreement\) must be a number in \[0, 1\]$'),
    ('self_training.py', 'runlocal', 'dataset.name', 'digits',
     r'^teacher\.model: cnn: inputs of shape \(1, 64\) are not images'),
    ('self_training.py', 'runlocal', 'rounds', 0, None),
    # label proportions traces its role too (a vector into an image model)
    ('llp.py', 'runlocal', 'dataset.name', 'digits',
     r'^model\.model: cnn: inputs of shape \(1, 64\) are not images'),
])
def test_the_checks_in_process(file, arg, key, value, message):
  from w2s.main import _dry_run as dry_run
  c = _config(file, arg)
  *path, leaf = key.split('.')
  with c.unlocked():
    node = c
    for k in path:
      node = node[k]
    node[leaf] = value
  if message is None:
    assert 'nothing was trained' in dry_run(c)
    return
  with pytest.raises(UserError, match=message) as e:
    dry_run(c)
  assert '\n' not in str(e.value)


def test_a_noisy_student_augmentation_that_cannot_run_fails_in_the_check():
  """The student's noise is only compiled after round 0 has trained: the check traces it."""
  from w2s.protocols import self_training
  c = _config('self_training.py', 'runlocal,noisy')
  with c.unlocked():
    c.student.train.augment = dict(name='tokens', mode='mask', p=0.15, mask_id=103,
                                   vocab_size=30522)
  with pytest.raises(UserError, match=r"^student\.train\.augment: .*'tokens'") as e:
    self_training.check(c)
  assert '\n' not in str(e.value)


_POLICIES = """
import numpy as np


def crashes(probs, *, round_index):
  return 1 / 0


def out_of_range(probs, *, round_index):
  return np.array([0, len(probs)]), np.array([0, 1])
"""


@pytest.mark.parametrize('name, message', [
    ('crashes', r"pseudo.select 'w2s_test_policies:crashes' .* fails on test probabilities "
                r"\(ZeroDivisionError"),
    ('out_of_range', 'must return distinct rows in 0..7 of U, each with a class in 0..2'),
])
def test_a_user_pseudo_label_policy_that_misbehaves_fails_in_the_check(tmp_path, monkeypatch,
                                                                       name, message):
  from w2s import options
  from w2s import pseudo_labels as pl
  (tmp_path / 'w2s_test_policies.py').write_text(_POLICIES)
  monkeypatch.syspath_prepend(str(tmp_path))
  pl.check(options.plugin('pseudo_labels', dict(name='threshold', tau=0.5), 'pseudo.select'), 3)
  p = options.plugin('pseudo_labels', dict(name=f'w2s_test_policies:{name}'), 'pseudo.select')
  with pytest.raises(UserError, match=message):
    pl.check(p, num_classes=3)


@pytest.mark.parametrize('template, problem', [
    ('{question', "expected '}' before end of string"),
    ('{question} }', "Single '}' encountered"),
    ('{question:d}', "Unknown format code 'd'"),
])
def test_a_debate_prompt_with_a_bad_template_is_one_line_naming_it(template, problem):
  from w2s.debate import text
  section = dict(model=dict(name='gpt2', size='tiny'), tokenizer='minilm',
                 prompts=dict(debate=(text.DEFAULT_PROMPTS['debate'][0], template)))
  with pytest.raises(UserError) as e:
    text.DebaterOptions.from_section(section)
  line = str(e.value)
  assert '\n' not in line and line.startswith('debate.prompts.debate[1] is not a valid template')
  assert problem in line and '{{' in line


def test_a_view_that_cannot_take_the_dataset_fails_in_the_supervised_dry_run(tmp_path):
  config = tmp_path / 'reshaped.py'
  config.write_text('from w2s.configs import supervised\n\n\ndef get_config(arg=None):\n'
                    "  c = supervised.get_config('dataset=digits,model=cnn,runlocal')\n"
                    '  with c.unlocked():\n'
                    "    c.input = dict(name='reshape', shape=SHAPE)\n  return c\n")
  text = config.read_text()
  config.write_text(text.replace('SHAPE', '(8, 8, 2)'))
  _one_error(_cli(f'--config={config}', '--dry_run'), 'reshape', 'shape=(8, 8, 2)', '64')
  config.write_text(text.replace('SHAPE', '(8, 8, 1)'))  # the right shape feeds the cnn
  assert _cli(f'--config={config}', '--dry_run').returncode == 0
