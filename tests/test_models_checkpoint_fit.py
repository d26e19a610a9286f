"""A pretrained checkpoint that does not fit its role's config is one error line naming every
problem (w2s/models/checkpoint_fit.py): another tokenizer than the checkpoint's own, a tokenizer
w2s cannot read or with more ids than embedding rows, a `size` preset that is not the checkpoint's
architecture, a max_length past its learned positions. Checked where the config is resolved, so
`--dry_run` refuses it (exit 2) before anything trains."""
import json
import os
import shutil

import pytest

from test_hardening import REPO, _cli, _one_error
from test_models_hub import WORDS, save_tokenizer
from w2s import options
from w2s.errors import UserError
from w2s.models import checkpoint_fit, hf_import
from w2s.protocols import learners

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
CONFIGS = os.path.join(REPO, 'configs')


def _gpt2(folder, tokenizer=True, positions=128):
  """A tiny GPT-2 (vocab 100, n_positions `positions`), with a tokenizer.json or, as a model a
  researcher made and saved themselves, without one."""
  cfg = transformers.GPT2Config(vocab_size=100, n_positions=positions, n_embd=32, n_layer=2,
                                n_head=4)
  transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(str(folder))
  if tokenizer:
    save_tokenizer(folder)
  return str(folder)


def _problems(path, tokenizer, **model):
  plugin = options.plugin('models', dict(name='gpt2', pretrained=path, **model), 'model')
  try:
    checkpoint_fit.check_role('strong.model', plugin, tokenizer)
  except UserError as e:
    assert '\n' not in str(e)
    return str(e)
  return None


def test_a_checkpoint_with_its_own_tokenizer_refuses_another(tmp_path):
  path = _gpt2(tmp_path / 'gpt2')
  assert _problems(path, dict(tokenizer=path, max_length=128)) is None
  copy = tmp_path / 'copy'  # the same vocabulary elsewhere (a shared tokenizer dir) is fine
  copy.mkdir()
  shutil.copy(os.path.join(path, 'tokenizer.json'), copy)
  assert _problems(path, dict(tokenizer=str(copy), max_length=128)) is None
  text = _problems(path, dict(tokenizer='minilm', max_length=128))
  assert "tokenizer='minilm' is another (30522 tokens)" in text, text
  assert f"tokenizer=dict(tokenizer={path!r}" in text and '(1) it has its own tokenizer' in text
  # a slow-tokenizer checkpoint (vocab.json only): compared too, and the fix says how to convert
  os.remove(os.path.join(path, 'tokenizer.json'))
  (tmp_path / 'gpt2' / 'vocab.json').write_text(json.dumps({w: i for i, w in enumerate(WORDS)}))
  text = _problems(path, dict(tokenizer=str(copy), max_length=128))
  assert 'own tokenizer (vocab.json, 12 tokens)' in text and 'save it as tokenizer.json' in text


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
  path = _gpt2(tmp_path / 'gpt2', tokenizer=False)
  text = _problems(path, dict(tokenizer='minilm', max_length=64))
  assert "'minilm' has 30522 token ids but its embedding has 100 rows" in text, text
  tok = tmp_path / 'tok'
  save_tokenizer(tok)
  assert _problems(path, dict(tokenizer=str(tok), max_length=64)) is None


def test_the_release_config_names_all_three_problems_of_a_self_made_gpt2(tmp_path):
  """weak=gpt2 with a GPT-2 saved by hand (no tokenizer.json, 128 positions): the release config
  tokenizes with the checkpoint, uses the 'small' preset and 1,024 tokens. Before, each fix
  revealed the next error; now one line names the three fixes."""
  import importlib.util
  path = _gpt2(tmp_path / 'mine', tokenizer=False)
  spec = importlib.util.spec_from_file_location('w2s_release', f'{CONFIGS}/w2s_release.py')
  release = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(release)
  c = release.get_config(f'task=sciq,data=/d,weak=gpt2,strong=gpt2,weak_ckpt={path},'
                         f'strong_ckpt={path}')
  with pytest.raises(UserError) as e:
    learners.RoleOptions.from_section('weak', c.weak, tokenizer=c.tokenizer, input_kind='text')
  text = str(e.value)
  assert '\n' not in text and text.startswith(f"weak.model: checkpoint '{path}' does not fit")
  assert '(1) it has no tokenizer.json and weak.tokenizer is the checkpoint itself' in text
  assert "(2) size='small' does not describe it (vocab_size 50257 vs its 100" in text
  assert 'ckpt_arch' in text
  assert '(3) weak.tokenizer.max_length=1024 exceeds its 128 learned positions' in text
  # each fix removes its problem: ckpt_arch, then max_length=128, then a tokenizer.json
  c = release.get_config(f'task=sciq,data=/d,weak_ckpt={path},strong_ckpt={path},ckpt_arch,'
                         'max_length=128')
  with pytest.raises(UserError, match=r'^weak\.model: .*: \(1\) it has no tokenizer\.json[^;]*$'):
    learners.RoleOptions.from_section('weak', c.weak, tokenizer=c.tokenizer, input_kind='text')
  save_tokenizer(path)
  learners.RoleOptions.from_section('weak', c.weak, tokenizer=c.tokenizer, input_kind='text')


def test_dry_run_refuses_the_checkpoint_of_another_tokenizer(tmp_path):
  path = _gpt2(tmp_path / 'gpt2')
  arg = f'dataset=rotten_tomatoes,model=gpt2,pretrained={path}'
  out = _cli(f'--config={CONFIGS}/supervised.py:{arg}', '--dry_run',
             '--config.tokenizer.tokenizer=minilm')
  _one_error(out, 'model: checkpoint', "tokenizer='minilm'", 'its own tokenizer (tokenizer.json',
             f'tokenizer=dict(tokenizer={path!r}')
  assert out.stdout == ''
  ok = _cli(f'--config={CONFIGS}/supervised.py:{arg}', '--dry_run')  # its own: the default
  assert ok.returncode == 0 and 'nothing was trained' in ok.stdout, ok.stderr[-2000:]


def test_dry_run_names_the_three_problems_of_a_w2s_strong_role(tmp_path):
  path = _gpt2(tmp_path / 'mine', tokenizer=False)
  model = "{'name': 'gpt2', 'size': 'small', 'pretrained': '%s'}" % path
  out = _cli(f'--config={CONFIGS}/w2s_offline.py:runlocal', '--dry_run',
             f'--config.strong.model={model}', f'--config.tokenizer.tokenizer={path}',
             '--config.tokenizer.max_length=1024')
  _one_error(out, 'strong.model: checkpoint', '(1) it has no tokenizer.json', "(2) size='small'",
             '(3) tokenizer.max_length=1024 exceeds its 128 learned positions')


def test_models_without_a_checkpoint_are_not_checked():
  plugin = options.plugin('models', dict(name='gpt2', size='tiny'), 'model')
  checkpoint_fit.check_role('model', plugin, dict(tokenizer='minilm', max_length=512))
  assert hf_import.resolve('minilm')  # and the embedded MiniLM fits its own tokenizer:
  plugin = options.plugin('models', dict(name='bert', pretrained='minilm'), 'model')
  checkpoint_fit.check_role('model', plugin, dict(tokenizer='minilm', max_length=128))
