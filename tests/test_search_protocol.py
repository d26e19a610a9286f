"""The weak-to-strong search protocol (Zhou et al., 2024): configs/w2s_search.py:runlocal end to end
through the command line, a rerun that produces nothing, bad input as one `error:` line, stages
keyed as configs/w2s_sft.py's, and the per-prompt batched search against the library's search of
each prompt alone (rows sharded over 2 devices)."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_hardening import REPO, _cli, _one_error
from w2s import sharding
from w2s.configs import w2s_search, w2s_sft
from w2s.errors import UserError
from w2s.generative import sampling
from w2s.generative import search as search_lib
from w2s.models import gpt2
from w2s.protocols import generative, search

CONFIG = os.path.join(REPO, 'configs', 'w2s_search.py')


def _run(workdir, *overrides, arg='runlocal'):
  return _cli(f'--config={CONFIG}:{arg}', f'--workdir={workdir}', *overrides)


def _parts(workdir):
  """{store part path: mtime} of every stored generation and search answer."""
  paths = glob.glob(os.path.join(workdir, '*', '*', 'part-*.npz'))
  return {p: os.path.getmtime(p) for p in paths}


def test_runlocal_end_to_end_then_a_rerun_produces_nothing(tmp_path):
  out = _run(tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'SMOKE TEST' in out.stdout and 'weak-to-strong search' in out.stdout
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['protocol'] == 'search' and results['seeds'] == [0]
  (record,) = results['per_seed']
  for m in ('acc_guided', 'acc_unguided', 'acc_greedy', 'acc_tuned'):
    assert 0.0 <= record[m] <= 1.0, (m, record[m])
    assert results['summary'][m]['values'] == [record[m]]
  diff = results['paired']['guided - unguided']
  assert diff['values'] == pytest.approx([record['acc_guided'] - record['acc_unguided']])
  assert diff['lo'] is None and diff['interval'] == 'none'  # one seed: no interval (NaN -> null)
  # the stored answers: one per test prompt, the guided score their mean log-ratio
  guided = glob.glob(str(tmp_path / 'search' / 'guided-*' / 'part-*.npz'))
  with np.load(guided[0]) as f:
    ids, texts, score = f['id'], f['texts'], f['score']
  assert len(guided) == 1 and len(ids) == record['n_test'] == len(set(ids.tolist()))
  assert record['score_guided'] == pytest.approx(float(np.mean(score)), rel=1e-5)
  assert np.all(np.isfinite(score)) and texts.dtype.kind == 'U'
  assert set(os.listdir(tmp_path / 'stages')) >= {d.split('/')[-1] for d in
                                                   record['stages'].values()}
  before = _parts(tmp_path)
  assert len(before) == 4  # guided, unguided, large greedy, tuned small greedy
  again = _run(tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  assert _parts(tmp_path) == before  # no new or rewritten part
  assert not [l for l in again.stderr.splitlines() if l.startswith('[')]  # no progress: nothing ran
  rerun = json.loads((tmp_path / 'results.json').read_text())['per_seed'][0]
  assert {k: rerun[k] for k in rerun if k != 'seconds'} == {
      k: record[k] for k in record if k != 'seconds'}


@pytest.mark.parametrize('overrides, arg, words', [
    (['--config.large.model.vocab_size=64'], 'runlocal', ['vocabularies differ', '64', '47']),
    ([], 'runlocal,beam=0', ['search.beam_width=0', '>= 1']),
])
def test_dry_run_refuses_bad_input_in_one_line(tmp_path, overrides, arg, words):
  out = _cli(f'--config={CONFIG}:{arg}', '--dry_run', *overrides)
  _one_error(out, *words)


@pytest.mark.parametrize('section, words', [
    (dict(max_new_tokens=200), ['max_new_tokens=200', '128 positions']),
    (dict(max_new_tokens=120, chunk_length=7), ['whole chunks of 7', '126 tokens', '128']),
    (dict(chunk_length=9), ['chunk_length=9', 'max_new_tokens=5']),
    (dict(samples_per_beam=0), ['samples_per_beam=0']),
    (dict(temperature=0.0), ['temperature > 0']),
])
def test_check_refuses_what_the_search_cannot_run(section, words):
  c = w2s_search.get_config('runlocal')
  c.search.update(section)
  with pytest.raises(UserError) as e:
    search.check(c)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_stages_are_w2s_sfts():
  """One shared_dir serves both configs: pretraining of both decoders and the weak (tuned small)
  SFT have the generative protocol's keys."""
  gen = generative.stage_plan(generative.resolve(w2s_sft.get_config('runlocal')), '/r', 0)
  srch = search.stage_plan(search.resolve(w2s_search.get_config('runlocal')), '/r', 0)
  assert srch['pretrain']['large'].dir == gen['pretrain']['strong'].dir
  assert srch['pretrain']['small'].dir == gen['pretrain']['weak'].dir
  assert srch['tuned'].dir == gen['weak'].dir


MODEL = gpt2.create(num_classes=1, size='tiny', vocab_size=24, num_layers=1, d_model=32,
                    num_heads=2, mlp_dim=64, max_len=32, dropout=0.0)


@jax.jit
def _params(key):
  """Tiny GPT-2 params (one compile for every seed), sharper than the N(0, 0.02) init: distinct,
  non-uniform next-token distributions."""
  ones = jnp.ones((1, 4), jnp.int32)
  params = MODEL.init({'params': key, 'dropout': key}, {'input_ids': ones, 'attention_mask': ones},
                      train=False)['params']
  return jax.tree.map(lambda a: a * 4.0 if a.ndim == 2 else a, params)


def test_search_rows_is_the_librarys_search_of_each_prompt_alone():
  """A prompt's answer depends on its id's key only, not on its batch: the vmapped, sharded batch
  gives what `w2s.generative.search` gives for that prompt alone with that key."""
  model = MODEL
  large, tuned, untuned = (_params(jax.random.key(s)) for s in (1, 2, 3))
  prompts = np.array([[3, 4, 6, 7, 8], [9, 10, 1, 0, 0], [12, 2, 0, 0, 0], [4, 4, 4, 13, 0]] * 2,
                     np.int32)
  mask = (prompts > 0).astype(np.int32)
  ids = np.array([5, 17, 2, 40, 41, 3, 8, 1000000007], np.int64)
  keys = sampling.row_keys(jax.random.key(0), ids)
  setting = dict(beam_width=2, samples_per_beam=2, chunk_length=2, max_new_tokens=3,
                 temperature=1.0, top_p=1.0, eos_id=11, pad_id=0)
  mesh = sharding.make_mesh(2)  # sharded rows (2 devices: 8 compile slower, test the same)
  batch = sharding.host_batch_to_global(
      {'ids': prompts, 'mask': mask, 'keys': np.asarray(jax.random.key_data(keys))}, mesh)
  tokens, out_mask, score = sharding.to_host(search.search_rows(
      large, tuned, untuned, batch['ids'], batch['mask'], batch['keys'], large=model,
      small=model, settings=tuple(sorted(setting.items()))))
  assert tokens.shape == out_mask.shape == (8, 3) and score.shape == (8,)
  assert len({tuple(t) for t in tokens[:4]} | {tuple(t) for t in tokens[4:]}) > 4  # keys differ
  for i in (0, 3, 7):
    alone = search_lib.search(model, large, model, tuned, model, untuned, prompts[i:i + 1],
                              mask[i:i + 1], rng=keys[i], **setting)
    np.testing.assert_array_equal(tokens[i], np.asarray(alone['tokens'][0]))
    np.testing.assert_array_equal(out_mask[i], np.asarray(alone['mask'][0]))
    np.testing.assert_allclose(score[i], np.asarray(alone['score'][0]), rtol=1e-5, atol=1e-6)
