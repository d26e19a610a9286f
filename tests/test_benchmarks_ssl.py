"""benchmarks/ssl_step.py runs its smallest configuration (the plain and the FixMatch step)."""
import importlib.util
import math
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'ssl_step.py')


def _load():
  spec = importlib.util.spec_from_file_location('ssl_step_bench', BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_ssl_step_smallest(capsys):
  out = _load().main(['--algos', 'supervised,fixmatch', '--batch', '8', '--mu', '2',
                      '--steps', '1', '--blocks', '2', '--aug_repeats', '1'])
  printed = capsys.readouterr().out
  steps = out['steps']
  assert set(steps) == {'supervised', 'fixmatch'}, printed
  for name, fig in steps.items():
    for key in ('compile_s', 'step_s', 'labelled_per_s', 'views_per_s', 'flops'):
      assert math.isfinite(fig[key]) and fig[key] > 0, (name, key, fig[key])
  assert steps['supervised']['time_ratio'] == 1.0
  # FixMatch at mu 2 runs the student forward on B + 4B rows and backward on B + 2B: XLA counts
  # several times the plain step's FLOPs (1 + 2 * mu = 5 times the rows seen)
  assert 2.0 < steps['fixmatch']['flops_ratio'] < 8.0, steps['fixmatch']
  assert math.isclose(steps['fixmatch']['views_per_s'], 5 * steps['fixmatch']['labelled_per_s'])
  views = out['views']
  assert {'a(x_l) [8]', 'a(x_u) [16]', 'A(x_u) [16]', 'all'} <= set(views), sorted(views)
  assert all(v['s'] > 0 for v in views.values())
  assert 'views alone vs the fixmatch step' in printed and 'load average start' in printed
