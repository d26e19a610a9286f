"""w2s.checkpoint: fingerprinted resume and the fall-back past a damaged latest checkpoint.

In-process cases check `Checkpointer.restore` and `check_fingerprint` directly; the CLI case damages
the checkpoints of a real supervised run (a truncated array file, an emptied _METADATA) and reruns
the same command, as a user whose disk or copy went wrong would.
"""
import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import xla_test_flags  # tests/xla_test_flags.py
from w2s import checkpoint, options
from w2s.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _largest_array_file(step_dir) -> str:
  files = [f for f in glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'), recursive=True)
           if os.path.isfile(f)]
  return max(files, key=os.path.getsize)


def _truncate(path):
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(size // 2)


def _empty(path):
  open(path, 'w').close()


# ------------------------------------------------------------------------------------------------
# in process


def _state(step):
  return {'w': jnp.full((64, 256), float(step), jnp.float32), 'step': jnp.int32(step)}


def _abstract():
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), _state(0))


def _save_steps(directory, steps):
  ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=len(steps))
  for s in steps:
    ckpt.save(s, jax.device_put(_state(s), jax.devices()[0]), {'step': s})
  ckpt.close()


def test_restore_falls_back_past_damaged_steps_then_refuses_when_none_is_readable(
    tmp_path, capsys):
  directory = str(tmp_path / 'checkpoints')
  _save_steps(directory, [1, 2, 3])
  _truncate(_largest_array_file(os.path.join(directory, '3')))
  _empty(os.path.join(directory, '2', 'state', '_METADATA'))

  ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=3)
  state, record = ckpt.restore(_abstract())
  assert record == {'step': 1} and int(state['step']) == 1
  np.testing.assert_array_equal(np.asarray(state['w']), 1.0)
  warnings = [l for l in capsys.readouterr().out.splitlines() if l.startswith('warning:')]
  assert len(warnings) == 1, warnings
  assert 'step 3, 2' in warnings[0] and 'resuming from step 1' in warnings[0]
  assert sorted(os.listdir(directory + '.unreadable')) == ['2', '3']  # kept, for a post-mortem
  assert ckpt.latest_step() == 1
  ckpt.close()

  _empty(os.path.join(directory, '1', 'state', '_METADATA'))
  ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=3)
  with pytest.raises(UserError, match=r'no readable checkpoint in .*\(step 1: '):
    ckpt.restore(_abstract())
  ckpt.close()


def test_restore_of_an_empty_directory_is_none(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'checkpoints'), every_steps=1)
  assert ckpt.restore(_abstract()) == (None, None)
  ckpt.close()


def test_check_fingerprint_refuses_a_different_config_and_keeps_the_record(tmp_path):
  wd = str(tmp_path)
  fp = {'train': {'lr': 0.1, 'seed': 0}, 'model': {'name': 'mlp'}}
  checkpoint.check_fingerprint(wd, fp, has_checkpoints=False)  # records it
  path = checkpoint.fingerprint_path(wd)
  recorded = open(path).read()
  checkpoint.check_fingerprint(wd, json.loads(json.dumps(fp)), has_checkpoints=True)  # same: ok

  other = {'train': {'lr': 0.2, 'seed': 0}, 'model': {'name': 'mlp'}}
  with pytest.raises(UserError, match=r'different config \(train\.lr: 0\.1 -> 0\.2\)'):
    checkpoint.check_fingerprint(wd, other, has_checkpoints=True)
  assert open(path).read() == recorded
  checkpoint.check_fingerprint(wd, other, has_checkpoints=False)  # no checkpoints: a fresh start
  assert json.load(open(path)) == other

  os.remove(path)  # checkpoints of unknown origin (e.g. an older w2s) are not trusted either
  with pytest.raises(UserError, match='no record of their config'):
    checkpoint.check_fingerprint(wd, other, has_checkpoints=True)


@pytest.mark.parametrize('damaged', ['', '{"train": {"lr": 0.1,', '[]'],
                         ids=['emptied', 'truncated', 'not a dict'])
def test_check_fingerprint_says_a_damaged_record_is_unreadable_and_keeps_it(tmp_path, damaged):
  wd = str(tmp_path)
  path = checkpoint.fingerprint_path(wd)
  open(path, 'w').write(damaged)
  with pytest.raises(UserError) as e:
    checkpoint.check_fingerprint(wd, {'train': {'lr': 0.1}}, has_checkpoints=True)
  line = str(e.value)
  assert '\n' not in line and line.startswith(f'{path} is unreadable'), line
  assert 'damaged' in line and f'delete {wd} to retrain' in line, line
  assert 'different config' not in line and '<absent>' not in line, line
  assert open(path).read() == damaged


def test_result_key_ignores_only_run_level_settings():
  base = dict(loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=1e-3),
              batch_size=64, num_steps=40, log_every=10, checkpoint_every=20, keep_checkpoints=3)
  key = options.TrainOptions.coerce(base).result_key()
  for k, v in (('log_every', 5), ('checkpoint_every', 7), ('keep_checkpoints', 1)):
    assert options.TrainOptions.coerce({**base, k: v}).result_key() == key, k
  for k, v in (('batch_size', 32), ('num_steps', 41), ('seed', 1),
               ('optimizer', dict(name='adam', learning_rate=2e-3)), ('loss', dict(name='gce'))):
    assert options.TrainOptions.coerce({**base, k: v}).result_key() != key, k


# ------------------------------------------------------------------------------------------------
# through the CLI


def _env():
  env = dict(os.environ)
  env['XLA_FLAGS'] = xla_test_flags.xla_flags(1)
  env['PYTHONPATH'] = os.pathsep.join([REPO, os.path.join(REPO, 'tests')])
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def _run(workdir, *overrides):
  """configs/supervised.py runlocal for 60 steps, checkpoints at 20, 40, 60, all three kept."""
  cmd = [sys.executable, '-m', 'w2s.main',
         f'--config={os.path.join(REPO, "configs", "supervised.py")}:runlocal',
         f'--workdir={workdir}', '--config.num_steps=60', '--config.checkpoint_every=20',
         '--config.keep_checkpoints=3', *overrides]
  return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _params(step_dir):
  path = os.path.join(step_dir, 'state')
  checkpointer = ocp.StandardCheckpointer()
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                        checkpointer.metadata(path).item_metadata.tree)
  return jax.device_get(checkpointer.restore(path, target)['params'])


def _warnings(out):
  return [l for l in (out.stdout + out.stderr).splitlines() if l.startswith('warning:')]


def test_emptied_fingerprint_is_one_line_exit_2_and_nothing_is_rewritten(tmp_path):
  wd = tmp_path / 'run'
  first = _run(wd, '--config.num_steps=20')
  assert first.returncode == 0, first.stderr[-3000:]
  fingerprint = wd / 'fingerprint.json'
  _empty(fingerprint)
  before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in wd.rglob('*') if p.is_file()}
  out = _run(wd, '--config.num_steps=20')
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2, out.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith(f'error: {fingerprint} is unreadable'), lines
  assert 'damaged' in lines[0] and '<absent>' not in lines[0], lines[0]
  after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in wd.rglob('*') if p.is_file()}
  assert after == before


def test_damaged_latest_checkpoint_falls_back_and_resumes_to_the_same_params(tmp_path):
  wd = tmp_path / 'run'
  ckpt = wd / 'checkpoints'
  first = _run(wd)
  assert first.returncode == 0, first.stderr[-3000:]
  assert sorted(os.listdir(ckpt)) == ['20', '40', '60']
  straight = _params(ckpt / '60')

  damages = {'truncated array file': lambda: _truncate(_largest_array_file(ckpt / '60')),
             'emptied _METADATA': lambda: _empty(ckpt / '60' / 'state' / '_METADATA')}
  for what, damage in damages.items():
    damage()
    out = _run(wd)
    assert out.returncode == 0, (what, out.stderr[-3000:])
    warnings = _warnings(out)
    assert len(warnings) == 1, (what, out.stdout, out.stderr[-3000:])
    assert 'checkpoint step 60' in warnings[0] and 'unreadable' in warnings[0], warnings[0]
    assert 'resuming from step 40' in warnings[0], warnings[0]
    assert 'resumed from step 40' in out.stdout, what
    assert os.path.isdir(wd / 'checkpoints.unreadable' / '60'), what
    assert sorted(os.listdir(ckpt)) == ['20', '40', '60'], what
    # the same data order and RNG from step 40: the parameters of the uninterrupted run
    jax.tree.map(np.testing.assert_array_equal, straight, _params(ckpt / '60'))

  results = (wd / 'results.json').read_bytes()
  for step in ('20', '40', '60'):
    _empty(ckpt / step / 'state' / '_METADATA')
  out = _run(wd)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2, out.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith('error: no readable checkpoint'), lines
  assert 'delete that directory' in lines[0]
  assert (wd / 'results.json').read_bytes() == results
