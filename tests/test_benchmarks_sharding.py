"""benchmarks/sharding_throughput.py runs its smallest configuration on the 8 fake CPU devices."""
import importlib.util
import math
import os

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'sharding_throughput.py')


def _load():
  spec = importlib.util.spec_from_file_location('sharding_throughput', BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_sharding_throughput_smallest(capsys):
  # one layer, dp and fsdp only: each layout costs a compile; the default run covers fsdp+tp
  out = _load().main(['--model', 'gpt2:tiny', '--batch', '8', '--seq', '16', '--steps', '2',
                      '--repeats', '1', '--layouts', 'dp,fsdp', '--arch', 'num_layers=1'])
  printed = capsys.readouterr().out
  assert set(out) == {'dp', 'fsdp', '_'}, printed
  for lay in ('dp', 'fsdp'):
    for key in ('bytes', 'compile_s', 'step_s', 'examples_per_s', 'tokens_per_s', 'mfu', 'loss'):
      assert math.isfinite(out[lay][key]) and out[lay][key] > 0, (lay, key, out[lay][key])
    assert out[lay]['mfu'] < 1, out[lay]  # a higher MFU means a wrong FLOP count or peak
  assert out['_']['peak_flops'] > 0 and out['_']['flops_per_token'] > 0
  # FSDP over 8 devices (every tensor sharded under the tiny default min_bytes=0) holds ~1/8
  assert out['fsdp']['bytes'] < out['dp']['bytes'] / 4
  assert 'fsdp/dp: throughput' in printed and 'MFU' in printed
