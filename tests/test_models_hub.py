"""Hugging Face hub ids where a checkpoint path is accepted (w2s/models/hub.py), never online.

A fake hub cache is built under tmp_path the way huggingface_hub lays one out
(`models--org--name/snapshots/<commit>/` + `refs/<revision>`), holding a tiny GPT-NeoX checkpoint
and its tokenizer; with HF_HUB_OFFLINE=1 the id must resolve to that snapshot and load, an id the
cache lacks must be one error line saying how to fetch it, and the online path is checked with
`snapshot_download` replaced (what it is asked for, and that it is asked once).
"""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from w2s import registry
from w2s.errors import UserError
from w2s.models import hf_import, hub

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
huggingface_hub = pytest.importorskip('huggingface_hub')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUB_ID = 'EleutherAI/pythia-tiny'
COMMITS = {'main': 'a' * 40, 'step3': 'b' * 40}
WORDS = ('the', 'a', 'film', 'movie', 'good', 'bad', 'is', 'and', 'of', 'it', 'not', 'great')


def save_tokenizer(folder, words=WORDS):
  """A word-level tokenizer.json over `words` (+ [PAD], [UNK]): what w2s tokenizes with."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {'[PAD]': 0, '[UNK]': 1, **{w: i + 2 for i, w in enumerate(words)}}
  tok = Tokenizer(models.WordLevel(vocab, unk_token='[UNK]'))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  os.makedirs(folder, exist_ok=True)
  tok.save(os.path.join(str(folder), 'tokenizer.json'))


def save_neox(folder, seed=0, vocab=100):
  torch.manual_seed(seed)
  cfg = transformers.GPTNeoXConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, rotary_pct=0.5)
  transformers.GPTNeoXForCausalLM(cfg).eval().save_pretrained(str(folder))
  save_tokenizer(folder)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
  """HF_HUB_CACHE with HUB_ID at two revisions, offline; -> the cache directory."""
  cache = tmp_path / 'hf' / 'hub'
  repo = cache / ('models--' + HUB_ID.replace('/', '--'))
  for seed, (rev, commit) in enumerate(COMMITS.items()):
    save_neox(repo / 'snapshots' / commit, seed=seed)
    (repo / 'refs').mkdir(parents=True, exist_ok=True)
    (repo / 'refs' / rev).write_text(commit)
  monkeypatch.setenv('HF_HUB_CACHE', str(cache))
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  hub._snapshot.cache_clear()
  yield cache
  hub._snapshot.cache_clear()


def test_a_cached_id_resolves_offline_and_loads(hub_cache):
  repo = hub_cache / ('models--' + HUB_ID.replace('/', '--'))
  main = str(repo / 'snapshots' / COMMITS['main'])
  assert hf_import.resolve(HUB_ID) == main
  assert hf_import.resolve(HUB_ID + '@step3') == str(repo / 'snapshots' / COMMITS['step3'])
  batch = {'input_ids': np.ones((1, 4), np.int32), 'attention_mask': np.ones((1, 4), np.int32)}
  by_id = registry.build('models', dict(name='gpt_neox', pretrained=HUB_ID), num_classes=2)
  by_dir = registry.build('models', dict(name='gpt_neox', pretrained=main), num_classes=2)
  assert by_id.pretrained == main
  a = hf_import.init_params(by_id, jax.random.key(0), batch)
  b = hf_import.init_params(by_dir, jax.random.key(0), batch)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  older = registry.build('models', dict(name='gpt_neox', pretrained=HUB_ID + '@step3'),
                         num_classes=2)
  c = hf_import.init_params(older, jax.random.key(0), batch)
  assert not np.array_equal(a['backbone']['embed_in']['embedding'],
                            c['backbone']['embed_in']['embedding'])  # another revision's weights


def test_an_id_missing_from_the_cache_is_one_line(hub_cache):
  for name, fetch in (('EleutherAI/pythia-absent', 'hf download EleutherAI/pythia-absent'),
                      (HUB_ID + '@step9', f'hf download {HUB_ID} --revision step9')):
    with pytest.raises(UserError) as e:
      hf_import.resolve(name)
    text = str(e.value)
    assert '\n' not in text and 'not in the local cache' in text and fetch in text, text
    assert str(hub_cache) in text and 'HF_HUB_OFFLINE=1' in text


def test_paths_are_never_ids(tmp_path, monkeypatch):
  """An existing directory named like an id is that directory; a path that cannot be an id
  (absolute, '..', no org) is the old 'not a directory' error; the hub is never asked."""
  def refuse(*args, **kwargs):
    raise AssertionError('the hub was asked')
  monkeypatch.setattr(huggingface_hub, 'snapshot_download', refuse)
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'org' / 'name').mkdir(parents=True)
  assert hf_import.resolve('org/name') == 'org/name'
  for bad in (str(tmp_path / 'nope'), '../org/name', 'gpt2'):
    assert not hub.is_hub_id(bad)
    with pytest.raises(UserError, match='is not a directory'):
      hf_import.resolve(bad)
  assert hub.is_hub_id('EleutherAI/pythia-70m') and hub.is_hub_id('org/name@step3000')


def test_online_downloads_once_into_the_cache(tmp_path, monkeypatch):
  """Online, `snapshot_download` is asked once per id (weights, config and tokenizer files, no
  torch .bin) into the standard cache: HF_HOME/hub here."""
  calls = []
  def fake(repo_id, **kwargs):
    calls.append((repo_id, kwargs))
    return str(tmp_path / 'snapshot')
  monkeypatch.setattr(huggingface_hub, 'snapshot_download', fake)
  for var in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv('HF_HOME', str(tmp_path / 'home'))
  hub._snapshot.cache_clear()
  try:
    assert hub.snapshot('org/model') == hub.snapshot('org/model') == str(tmp_path / 'snapshot')
  finally:
    hub._snapshot.cache_clear()
  assert len(calls) == 1
  repo_id, kwargs = calls[0]
  assert repo_id == 'org/model' and kwargs['revision'] == 'main'
  assert kwargs['cache_dir'] == str(tmp_path / 'home' / 'hub') and not kwargs['local_files_only']
  patterns = kwargs['allow_patterns']
  assert {'config.json', 'model.safetensors', 'tokenizer.json'} <= set(patterns)
  assert not any(p.endswith('.bin') or p.startswith('consolidated') for p in patterns)


def _cli(arg, env):
  cmd = [sys.executable, '-m', 'w2s.main', f'--config={REPO}/configs/supervised.py:{arg}',
         '--dry_run']
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_the_cli_takes_a_hub_id(hub_cache):
  """`configs/supervised.py:...,pretrained=<id>` (model and tokenizer from the cached snapshot)
  passes --dry_run offline; an id not in the cache is one `error:` line, exit 2."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  ok = _cli(f'dataset=rotten_tomatoes,model=gpt_neox,pretrained={HUB_ID}', env)
  assert ok.returncode == 0 and 'nothing was trained' in ok.stdout, ok.stderr[-2000:]
  assert f'pretrained: {HUB_ID}' in ok.stdout
  bad = _cli('dataset=rotten_tomatoes,model=gpt_neox,pretrained=EleutherAI/pythia-absent', env)
  lines = bad.stderr.strip().splitlines()
  assert bad.returncode == 2 and len(lines) == 1, bad.stderr[-2000:]
  assert lines[0].startswith('error: ') and 'not in the local cache' in lines[0], lines[0]
