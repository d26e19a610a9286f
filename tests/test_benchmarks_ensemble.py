"""benchmarks/ensemble_vmap.py at its smoke size: end to end and steady state, compiles apart."""
import importlib.util
import math
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'ensemble_vmap.py')


def test_ensemble_benchmark_reports_steady_state_and_compiles_apart(capsys):
  spec = importlib.util.spec_from_file_location('ensemble_vmap_bench', BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  out = mod.main(['--smoke', '--hidden', '32'])
  printed = capsys.readouterr().out
  assert set(out['step_s']) == {'separate', 'vmapped'}, printed
  for v in list(out['step_s'].values()) + list(out['compile_s'].values()):
    assert math.isfinite(v) and v > 0
  assert math.isclose(out['speedup'], out['step_s']['separate'] / out['step_s']['vmapped'])
  assert 'per-step speed-up' in printed and 'compile:' in printed
