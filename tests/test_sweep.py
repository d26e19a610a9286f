"""Sweeps and reports: expansion, naming, one shared stage directory, --print / --dry_run, a
rerun that finishes only what is missing, and the report's table and plots; a bad sweep, a
failing get_sweep or a damaged results.json is one error line that writes nothing, SIGTERM /
Ctrl-C stops a --workers sweep at a safe point (exit 143), and --config.key=value overrides reach
every point."""
import csv
import hashlib
import json
import os
import queue
import shutil
import signal
import threading

import pytest

import xla_test_flags  # tests/xla_test_flags.py
from w2s import report, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALING = os.path.join(REPO, 'configs', 'w2s_scaling.py')


def test_product_zipped_and_names():
  pts = sweep.product(sweep.axis('splits.max_weak', [250, 500]),
                      sweep.axis('strong.model.layers', [1, 2, 3]))
  assert len(pts) == 6 and pts[0] == {'splits.max_weak': 250, 'strong.model.layers': 1}
  assert pts[-1] == {'splits.max_weak': 500, 'strong.model.layers': 3}  # last axis fastest
  z = sweep.zipped(sweep.axis('a', [1, 2]), sweep.axis('b.c', ['x', 'y']))
  assert z == [{'a': 1, 'b.c': 'x'}, {'a': 2, 'b.c': 'y'}]
  assert sweep.point_name(pts[0]) == 'max_weak-250_layers-1'
  assert sweep.point_name({'strong.loss': dict(name='gce', q=0.7)}) == 'loss-gce'
  with pytest.raises(Exception, match='one length'):
    sweep.zipped(sweep.axis('a', [1, 2]), sweep.axis('b', [1]))


def test_bad_sweep_input_is_one_line(tmp_path, capsys):
  base = ['--config', f'{SCALING}:runlocal', '--workdir', str(tmp_path)]
  assert sweep.main(base + ['--only', 'nope']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: --only \'nope\' is not a point') and 'max_weak-64_num_layers-1' in err
  assert sweep.main(base + ['--index', '9']) == 2
  assert 'outside the sweep\'s 4 points' in capsys.readouterr().err
  plain = os.path.join(REPO, 'configs', 'supervised.py')
  assert sweep.main(['--config', plain, '--workdir', str(tmp_path)]) == 2
  assert 'defines no get_sweep' in capsys.readouterr().err
  assert not os.listdir(tmp_path)  # nothing written


def test_print_writes_one_command_per_point(tmp_path, capsys):
  assert sweep.main(['--config', f'{SCALING}:runlocal', '--workdir', str(tmp_path),
                     '--print']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 4 and all('-m w2s.sweep' in l and '--only=' in l for l in lines)
  assert lines[0].endswith('--only=max_weak-64_num_layers-1')
  # the full study: 4 weak strengths x 6 MiniLM truncations
  assert sweep.main(['--config', SCALING, '--workdir', str(tmp_path), '--print']) == 0
  assert len(capsys.readouterr().out.strip().splitlines()) == 24


@pytest.mark.slow
def test_sweep_trains_each_weak_stage_once_and_reports(tmp_path, capsys):
  """2 weak strengths x 2 strong sizes x {xent, logconf} x 2 seeds (~70 s)."""
  base = ['--config', f'{SCALING}:runlocal', '--workdir', str(tmp_path)]
  # an interrupted sweep: only the first point ran
  assert sweep.main(base + ['--index', '0']) == 0
  capsys.readouterr()
  assert sweep.main(base + ['--dry_run']) == 0
  status = {l.split('  ')[0]: l.split('  ')[-1]
            for l in capsys.readouterr().out.strip().splitlines()}
  assert status['max_weak-64_num_layers-1'] == 'done'
  # the second strong size finds its weak stages (2 seeds) done: 2 of its 8 stages
  assert status['max_weak-64_num_layers-2'] == '2/8 stages done'
  assert status['max_weak-128_num_layers-1'] == '0/8 stages done'
  assert sweep.main(base) == 0  # the rerun finishes only what was missing
  out = capsys.readouterr().out
  assert out.count('max_weak-64_num_layers-1: done earlier, skipped') == 1
  assert out.count('[weak] done earlier, skipped') == 4  # each point's 2nd size, 2 seeds
  stages = os.listdir(tmp_path / 'stages')
  assert sorted(s.split('-')[0] for s in stages if s.startswith('weak')) == ['weak'] * 4
  assert len([s for s in stages if s.startswith('ceiling')]) == 8
  for name in ('max_weak-64_num_layers-1', 'max_weak-128_num_layers-2'):
    saved = json.load(open(tmp_path / name / 'results.json'))
    assert set(saved['summary']) == {'xent', 'logconf'} and len(saved['per_seed']) == 2
  paths = report.report([str(tmp_path)])
  assert [os.path.basename(p) for p in paths] == ['report.csv', 'report.md', 'accuracy.png',
                                                  'pgr.png', 'curves.png']
  assert all(os.path.getsize(p) > 0 for p in paths)
  table = list(csv.DictReader(open(tmp_path / 'report.csv')))
  assert len(table) == 8 and {r['loss'] for r in table} == {'xent', 'logconf'}
  assert {r['strong.model.num_layers'] for r in table} == {'1', '2'}
  row = next(r for r in table if r['run'] == 'max_weak-128_num_layers-2' and r['loss'] == 'xent')
  saved = json.load(open(tmp_path / 'max_weak-128_num_layers-2' / 'results.json'))
  assert float(row['acc_student_mean']) == pytest.approx(
      saved['summary']['xent']['acc_student']['mean'])
  assert '| splits.max_weak | strong.model.num_layers | loss |' in open(
      tmp_path / 'report.md').read()
  capsys.readouterr()
  assert sweep.main(base) == 0  # everything done: nothing trains
  assert capsys.readouterr().out.count('done earlier, skipped') == 4
  # the colab draws the same figures from the finished sweep directory
  text, images = _run_notebook(tmp_path, tmp_path)
  assert len(images) == 3 and 'max_weak-128_num_layers-2' in text and 'best PGR' in text


def _run_notebook(sweep_dir, tmp_path):
  nbclient = pytest.importorskip('nbclient')
  nbformat = pytest.importorskip('nbformat')
  nb = nbformat.read(os.path.join(REPO, 'colabs', 'sweep_report.ipynb'), as_version=4)
  assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code'), 'commit it cleared'
  env = dict(os.environ, W2S_SWEEP_DIR=str(sweep_dir), JAX_PLATFORMS='cpu')
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                                   resources={'metadata': {'path': str(tmp_path)}})
  client.execute(env=env)
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  return text, images


# A tiny supervised sweep (40 steps of an MLP on digits per point): 'seed' over 0 and 1, or with
# `:sweep=NAME` one of the sweeps below; `:slow` makes the second get_config call hang (a check
# that takes long).
TINY = """
import time
from w2s import config_args, sweep
from w2s.configs import supervised

SWEEPS = {
    'key': [{'mesh.num_devicez': 0}],  # a key the config does not define
    'hparam': sweep.axis('optimizer.learning_ratee', [0.1]),  # an option adam does not take
    'value': sweep.axis('batch_size', [64, -4]),  # the first point is fine
    'type': sweep.axis('seed', [2, 'three']),
    'not_points': [['seed', 0]],
}
CALLS = []


def _args(arg):
  return config_args.parse(arg, sweep='seed', slow=False)


def get_config(arg=None):
  CALLS.append(arg)
  if _args(arg)['slow'] and len(CALLS) == 2:
    time.sleep(600)
  return supervised.get_config('runlocal')


def get_sweep(arg=None):
  name = _args(arg)['sweep']
  if name == 'raise':
    return sweep.axis('seed', [0, 1])[2]['seed']
  return sweep.axis('seed', [0, 1]) if name == 'seed' else SWEEPS[name]
"""


@pytest.fixture(scope='module')
def tiny_sweep(tmp_path_factory):
  """The TINY sweep config file."""
  path = tmp_path_factory.mktemp('config') / 'tiny_sweep.py'
  path.write_text(TINY)
  return str(path)


@pytest.fixture(scope='module')
def finished_sweep(tiny_sweep, tmp_path_factory):
  """A workdir where the TINY sweep ran to the end (read-only: copy it to change it)."""
  workdir = str(tmp_path_factory.mktemp('finished'))
  assert sweep.main(['--config', tiny_sweep, '--workdir', workdir]) == 0
  return workdir


def _sweep_cli(config, workdir, *flags, **popen):
  """`python -m w2s.sweep` in a subprocess (on CPU), started; text stdout / stderr pipes, buffered
  as in a user's shell (what the sweep does not flush comes late)."""
  import subprocess
  import sys
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_test_flags.xla_flags())
  env.pop('PYTHONUNBUFFERED', None)
  return subprocess.Popen([sys.executable, '-m', 'w2s.sweep', f'--config={config}',
                           f'--workdir={workdir}', *flags], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **popen)


def _tree(root) -> dict:
  """{path: sha256 of the file, or 'dir'} of everything under root (what a failing run may not
  touch)."""
  out = {}
  for d, dirs, files in os.walk(root):
    out.update({os.path.relpath(os.path.join(d, x), root): 'dir' for x in dirs})
    for f in files:
      with open(os.path.join(d, f), 'rb') as fh:
        out[os.path.relpath(os.path.join(d, f), root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


@pytest.mark.parametrize('bad, says', [
    ('key', "mesh has no 'num_devicez' (did you mean 'num_devices'?)"),
    ('hparam', 'learning_ratee'),
    ('value', 'batch_size'),
    ('type', "key 'seed'"),
])
def test_a_bad_sweep_leaves_a_finished_one_as_it_was(tiny_sweep, finished_sweep, bad, says,
                                                     capsys):
  """Every point is checked before anything is written: sweep.json (the report's index) and
  every point directory stay as the finished sweep left them."""
  before = _tree(finished_sweep)
  assert sweep.main(['--config', f'{tiny_sweep}:sweep={bad}', '--workdir', finished_sweep]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: sweep point ') and err.count('\n') == 1 and says in err, err
  assert _tree(finished_sweep) == before


def test_a_failing_get_sweep_is_one_line(tiny_sweep, tmp_path, capsys):
  for name, says in (('raise', 'raised IndexError: list index out of range (line '),
                     ('not_points', "returned the point ['seed', 0]")):
    assert sweep.main(['--config', f'{tiny_sweep}:sweep={name}', '--workdir',
                       str(tmp_path / 'w')]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {tiny_sweep}: get_sweep(') and err.count('\n') == 1, err
    assert says in err, err
  assert not os.path.exists(tmp_path / 'w')


def test_a_damaged_results_json_is_one_line_and_never_overwritten(tiny_sweep, finished_sweep,
                                                                  tmp_path, capsys):
  """A truncated or emptied results.json stops the sweep (run and --dry_run) naming the file;
  deleting it, as the line says, recomputes that point."""
  workdir = tmp_path / 'w'
  shutil.copytree(finished_sweep, workdir)
  first, second = workdir / 'seed-0' / 'results.json', workdir / 'seed-1' / 'results.json'
  first.write_text(first.read_text()[:100])
  second.write_text('')
  base = ['--config', tiny_sweep, '--workdir', str(workdir)]
  before = _tree(workdir)
  for damaged in (first, second):
    for flags in (['--dry_run'], []):
      assert sweep.main(base + flags) == 2
      err = capsys.readouterr().err
      assert err.startswith(f'error: sweep point {damaged.parent.name}: {damaged} is damaged')
      assert err.count('\n') == 1 and 'delete it and rerun the sweep' in err, err
      assert _tree(workdir) == before
    os.remove(damaged)
    before = _tree(workdir)
  assert sweep.main(base) == 0
  for seed, path in enumerate((first, second)):
    assert json.load(open(path))['provenance']['config']['seed'] == seed


def _lines(stream) -> queue.Queue:
  """The lines of a subprocess's pipe, as they come (a reader thread)."""
  q = queue.Queue()
  def read():
    for line in stream:
      q.put(line)
    q.put(None)
  threading.Thread(target=read, daemon=True).start()
  return q


def _interrupt(config, workdir, send) -> list[str]:
  """Starts `--workers 2` on `config`, calls send(its pid) once both points are training, and
  returns its stderr lines; the sweep must exit 143 with nothing finished."""
  proc = _sweep_cli(config, workdir, '--workers=2', start_new_session=True)
  out, err = _lines(proc.stdout), _lines(proc.stderr)
  started = set()
  while len(started) < 2:  # both points are in train_and_evaluate (compiling: seconds)
    line = out.get(timeout=120)
    assert line is not None, 'the sweep ended before its points started'
    if line.startswith('[sweep] seed-'):
      started.add(line.split(':')[0])
  send(proc.pid)
  assert proc.wait(timeout=120) == 143
  assert not any((workdir / f'seed-{s}' / 'results.json').exists() for s in (0, 1))
  return list(iter(err.get, None))


def test_workers_stop_at_sigterm_and_the_rerun_finishes(tiny_sweep, tmp_path):
  """--workers 2: SIGTERM to the sweep (as a scheduler sends it) stops both point processes at a
  safe point, one preempted: line, exit 143; the same command then runs each point in its own
  process to the end."""
  workdir = tmp_path / 'sw'
  err = _interrupt(tiny_sweep, workdir, lambda pid: os.kill(pid, signal.SIGTERM))
  assert err[-1].startswith('preempted: sweep: SIGTERM received; 2 running point(s) stopped at '
                            'a safe point (seed-'), err
  proc = _sweep_cli(tiny_sweep, workdir, '--workers=2')
  _, text = proc.communicate(timeout=300)
  assert proc.returncode == 0, text[-2000:]
  for seed in (0, 1):
    saved = json.load(open(workdir / f'seed-{seed}' / 'results.json'))
    assert saved['provenance']['config']['seed'] == seed and 0 <= saved['accuracy'] <= 1


def test_ctrl_c_to_a_workers_sweep_is_preempted_not_failed(tiny_sweep, tmp_path):
  """SIGINT to the whole process group: the points exit 143 themselves; that is a preemption."""
  err = _interrupt(tiny_sweep, tmp_path / 'sw', lambda pid: os.killpg(pid, signal.SIGINT))
  assert err[-1].startswith('preempted: sweep: SIGINT received; 2 running point(s)'), err
  assert not any(l.startswith('error:') for l in err), err


def test_dry_run_prints_each_point_as_it_is_checked(tiny_sweep, tmp_path):
  """The first point's line comes while the second point's check is still running."""
  proc = _sweep_cli(f'{tiny_sweep}:slow', tmp_path / 'w', '--dry_run')
  try:
    first = _lines(proc.stdout).get(timeout=60)
    assert first == 'seed-0  {"seed": 0}  to run\n' and proc.poll() is None
  finally:
    proc.kill()
    proc.wait()
  assert not os.path.exists(tmp_path / 'w')


OVERRIDES = ('--config.num_steps=10', '--config.optimizer.learning_rate', '0.01')


def test_config_overrides_reach_every_point_and_stay_with_the_sweep(tiny_sweep, tmp_path, capsys):
  """`--config.key=value` as w2s.main takes it: applied to every point before the point's own
  values, passed on by --print and recorded in sweep.json. A rerun with other overrides (or
  none), a key the config lacks, a value that does not parse and an override every point sets
  again are one error line each that write nothing."""
  workdir = tmp_path / 'sw'
  proc = _sweep_cli(tiny_sweep, workdir, *OVERRIDES)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  for seed in (0, 1):
    config = json.load(open(workdir / f'seed-{seed}' / 'results.json'))['provenance']['config']
    assert (config['seed'], config['num_steps'], config['optimizer']['learning_rate'],
            config['log_every']) == (seed, 10, 0.01, 10)  # log_every: runlocal's own
  assert json.load(open(workdir / 'sweep.json'))['config_overrides'] == {
      'num_steps': 10, 'optimizer.learning_rate': 0.01}
  base = ['--config', tiny_sweep, '--workdir', str(workdir)]
  assert sweep.main(base + ['--print', *OVERRIDES]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 2 and all(l.endswith(' '.join(OVERRIDES)) for l in lines), lines
  assert sweep.main(base + list(OVERRIDES)) == 0  # the same overrides: every point done
  assert capsys.readouterr().out.count('done earlier, skipped') == 2
  before = _tree(workdir)
  given = '--config.num_steps=10 --config.optimizer.learning_rate=0.01'
  for flags, says in (
      (['--config.num_steps=20'], f'is a sweep run with the overrides {given}, not '
                                  '--config.num_steps=20; rerun it with the same ones'),
      (['--dry_run'], f'{given}, not none'),
      (['--config.num_stepz=10'], "--config.num_stepz: the config has no 'num_stepz' (did you "
                                  "mean 'num_steps'?)"),
      (['--config.optimizer.momentum=0.9'], "optimizer has no 'momentum'"),
      (['--config.num_steps=ten'], '--config.num_steps=ten: invalid literal for int()'),
      ([*OVERRIDES, '--config.seed=3'], '--config.seed changes nothing: every point')):
    assert sweep.main(base + flags) == 2, flags
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and says in err, err
  assert _tree(workdir) == before


def test_stage_lock_makes_a_second_process_wait(tmp_path):
  import multiprocessing
  import time
  from w2s.protocols.stages import Stage
  stage = Stage(str(tmp_path), 'weak', {'a': 1}, seed=0)
  ctx = multiprocessing.get_context('spawn')
  started = ctx.Event()
  holder = ctx.Process(target=_hold, args=(str(tmp_path), started))
  holder.start()
  assert started.wait(60)
  t0 = time.time()
  with stage.lock():
    waited = time.time() - t0
  holder.join(60)
  assert waited > 0.5, waited  # the holder keeps it for 1.5 s after signalling


def _hold(root, started):
  import time
  from w2s.protocols.stages import Stage
  with Stage(root, 'weak', {'a': 1}, seed=0).lock():
    started.set()
    time.sleep(1.5)
