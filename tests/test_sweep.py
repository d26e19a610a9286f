"""Sweeps and reports: expansion, naming, one shared stage directory, --print / --dry_run, a
rerun that finishes only what is missing, and the report's table and plots."""
import csv
import json
import os

import pytest

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


def test_workers_run_points_in_parallel_processes(tmp_path):
  """--workers 2 on a tiny supervised sweep: each point in its own process, both finish."""
  cfg = tmp_path / 'tiny_sweep.py'
  cfg.write_text(
      'from w2s import sweep\n'
      'from w2s.configs import supervised\n'
      'def get_config(arg=None):\n'
      '  return supervised.get_config("runlocal")\n'
      'def get_sweep(arg=None):\n'
      '  return sweep.axis("seed", [0, 1])\n')
  import subprocess
  import sys
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  r = subprocess.run([sys.executable, '-m', 'w2s.sweep', f'--config={cfg}',
                      f'--workdir={tmp_path / "sw"}', '--workers=2'], env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  for seed in (0, 1):
    saved = json.load(open(tmp_path / 'sw' / f'seed-{seed}' / 'results.json'))
    assert saved['provenance']['config']['seed'] == seed and 0 <= saved['accuracy'] <= 1


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
