"""The command line as a user runs it: errors, preemption, crash-resume and multi-process runs."""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

import digest  # tests/digest.py
import xla_test_flags  # tests/xla_test_flags.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, 'configs', 'supervised.py')


def _env(devices=1):
  env = dict(os.environ)
  env['XLA_FLAGS'] = xla_test_flags.xla_flags(devices)
  env['PYTHONPATH'] = os.pathsep.join([REPO, os.path.join(REPO, 'tests')])
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def _cmd(workdir, *overrides, arg='runlocal', extra=()):
  return [sys.executable, '-m', 'w2s.main', f'--config={CONFIG}:{arg}', f'--workdir={workdir}',
          *extra, *overrides]


def _run(workdir, *overrides, devices=1, **kw):
  return subprocess.run(_cmd(workdir, *overrides, **kw), env=_env(devices), capture_output=True,
                        text=True, timeout=300)


def _params(workdir):
  ckpt = os.path.join(workdir, 'checkpoints')
  step = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  import jax
  path = os.path.join(ckpt, str(step), 'state')
  checkpointer = ocp.StandardCheckpointer()
  # restore onto this process's first device whatever topology saved it (e.g. 2 hosts x 2 devices)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                        checkpointer.metadata(path).item_metadata.tree)
  return step, checkpointer.restore(path, target)['params']


def _assert_same(a, b, atol=0.0):
  import jax
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=atol, atol=atol), a, b)


_tree_digest = digest.tree_digest


def test_bad_input_is_one_line_and_keeps_the_good_checkpoint(tmp_path):
  good = _run(tmp_path, '--config.num_steps=20')
  assert good.returncode == 0, good.stderr[-2000:]
  before = _tree_digest(tmp_path / 'checkpoints')
  cases = {
      'unknown config key': ['--config.no_such_key=1'],
      'bad override value': ['--config.num_steps=abc'],
      'unknown flag': ['--no_such_flag'],
      'unknown loss': ['--config.loss.name=no_such_loss', '--config.num_steps=40'],
      'unknown model': ['--config.model.name=no_such_model', '--config.num_steps=40'],
      'indivisible batch': ['--config.batch_size=60', '--config.num_steps=40'],
  }
  for what, overrides in cases.items():
    out = _run(tmp_path, *overrides, devices=8)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (what, out.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith('error: '), (what, out.stderr[-2000:])
  assert 'known: ' in _run(tmp_path, '--config.loss.name=nope').stderr
  assert _tree_digest(tmp_path / 'checkpoints') == before

  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  out = _run(blocker / 'workdir')
  assert out.returncode == 2 and out.stderr.strip().startswith('error: cannot create workdir')
  assert len(out.stderr.strip().splitlines()) == 1


def _wait_for_step(workdir, min_records, proc, timeout=120):
  path = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      return False
    if os.path.exists(path) and sum(1 for _ in open(path)) >= min_records:
      return True
    time.sleep(0.05)
  return False


LONG = ['--config.num_steps=1500', '--config.log_every=50']


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """The uninterrupted 1,500-step run both resume cases must match (read-only). It saves only at
  its end: where a run checkpoints changes no parameter, so one reference serves a resume from
  a SIGTERM save and one from the last periodic checkpoint (every 100 steps) alike."""
  workdir = tmp_path_factory.mktemp('straight') / 'run'
  out = _run(workdir, *LONG, '--config.checkpoint_every=1500')
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir


def test_sigterm_saves_and_resume_matches_uninterrupted(tmp_path, straight):
  workdir = tmp_path / 'preempted'
  proc = subprocess.Popen(_cmd(workdir, *LONG, '--config.checkpoint_every=1500'), env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert _wait_for_step(workdir, 2, proc), 'training never started'
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err[-2000:]
  assert 'preempted:' in err and 'rerun the same command to resume' in err
  step, _ = _params(workdir)
  assert 0 < step < 1500

  resumed = _run(workdir, *LONG, '--config.checkpoint_every=1500')
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f'resumed from step {step}' in resumed.stdout
  assert _params(workdir)[0] == 1500
  _assert_same(_params(straight)[1], _params(workdir)[1])


def test_sigkill_resumes_from_last_checkpoint(tmp_path, straight):
  workdir = tmp_path / 'killed'
  args = [*LONG, '--config.checkpoint_every=100']
  proc = subprocess.Popen(_cmd(workdir, *args), env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  assert _wait_for_step(workdir, 5, proc), 'training never started'
  proc.kill()
  proc.communicate(timeout=60)
  ckpt = workdir / 'checkpoints'
  saved = sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())
  assert saved and saved[-1] < 1500
  resumed = _run(workdir, *args)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f'resumed from step {saved[-1]}' in resumed.stdout
  assert _params(workdir)[0] == 1500
  _assert_same(_params(straight)[1], _params(workdir)[1])


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# the second case shards every parameter and its Adam moments over the 4 devices of 2 hosts
TWO = ['--config.num_steps=30', '--config.batch_size=32']


@pytest.fixture(scope='module')
def single(tmp_path_factory):
  """(workdir, finished run) of TWO on one process with one device: what both layouts of two
  processes must reproduce (read-only)."""
  workdir = tmp_path_factory.mktemp('single') / 'run'
  out = _run(workdir, *TWO, devices=1)
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir, out


@pytest.mark.parametrize('layout', ['runlocal', 'runlocal,partition=fsdp,fsdp=-1,shard_min_bytes=0'])
def test_two_processes_match_one_process(tmp_path, layout, single):
  args = TWO
  single_dir, single = single
  port = _free_port()
  env = _env(devices=0)
  procs = [subprocess.Popen(
      _cmd(tmp_path / 'multi', *args, arg=layout, extra=[
          '--jax_distributed', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
          f'--process_id={i}', '--cpu_devices_per_process=2']),
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  # process 0 reports the same accuracy over the same number of test examples as one process:
  # each example seen once across the 4 devices of 2 hosts
  summary = [l for l in single.stdout.splitlines() if l.startswith('[supervised]')]
  assert summary and summary[0] in outs[0][0]
  _assert_same(_params(single_dir)[1], _params(tmp_path / 'multi')[1], atol=1e-5)


@pytest.mark.slow
def test_weak_to_strong_two_processes_match_one_process(tmp_path):
  """The whole protocol over 2 hosts x 2 devices gives the stage outputs of one process."""
  w2s_config = os.path.join(REPO, 'configs', 'w2s_offline.py') + ':runlocal,seeds=1'
  base = [sys.executable, '-m', 'w2s.main', f'--config={w2s_config}']
  single = subprocess.run([*base, f'--workdir={tmp_path / "single"}'], env=_env(devices=1),
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  port = _free_port()
  procs = [subprocess.Popen(
      [*base, f'--workdir={tmp_path / "multi"}', '--jax_distributed',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
       '--cpu_devices_per_process=2'],
      env=_env(devices=0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  stages = sorted(os.listdir(tmp_path / 'single' / 'stages'))
  assert stages == sorted(os.listdir(tmp_path / 'multi' / 'stages'))  # same config keys
  for stage in stages:
    one = np.load(tmp_path / 'single' / 'stages' / stage / 'outputs.npz')
    two = np.load(tmp_path / 'multi' / 'stages' / stage / 'outputs.npz')
    assert sorted(one.files) == sorted(two.files)
    for k in one.files:
      np.testing.assert_allclose(one[k], two[k], rtol=1e-5, atol=1e-4, err_msg=f'{stage}/{k}')
