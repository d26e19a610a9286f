"""benchmarks/vs_torch.py in smoke mode: both sides run, agree, and give finite positive rates."""
import importlib.util
import math
import os

import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('transformers')

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'vs_torch.py')


def _load():
  spec = importlib.util.spec_from_file_location('vs_torch_bench', BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _check_rates(fig, sides):
  for side in sides:
    assert math.isfinite(fig[side]) and fig[side] > 0, (side, fig)
    assert len(fig['rates'][side]) == 2  # --smoke: two alternating blocks
  for key in [k for k in fig if k.startswith('ratio')]:
    assert math.isfinite(fig[key]) and fig[key] > 0, (key, fig)
  assert math.isfinite(fig['compile_s']) and fig['compile_s'] > 0


@pytest.fixture
def torch_threads():
  threads = torch.get_num_threads()  # main() sets them for the whole process
  yield
  torch.set_num_threads(threads)


def test_vs_torch_smoke(capsys, torch_threads):  # pylint: disable=redefined-outer-name,unused-argument
  bench = _load()
  # one-layer MiniLM (real weights) step and extraction, 8 real snippets through our buckets
  out = bench.main(['--smoke', '--threads', '1', '--models', 'minilm', '--only', 'step,extract',
                    '--rt', '8'])
  printed = capsys.readouterr().out
  assert set(out) == {'minilm/step', 'minilm/extract', 'minilm/extract_rt', '_'}, printed
  _check_rates(out['minilm/step'], ('ours', 'torch'))
  _check_rates(out['minilm/extract'], ('ours', 'torch'))
  _check_rates(out['minilm/extract_rt'], ('ours', 'torch', 'torch_dynamic', 'torch_sorted'))
  agree = out['_']['agree']
  # the same computation on both sides (the benchmark asserts 1e-4; fp32 gets far closer)
  assert agree['minilm']['rel'] < 1e-5 and agree['minilm rotten_tomatoes']['rel'] < 1e-5, agree
  assert 'ours/torch' in printed and 'load average start' in printed

  # one-layer GPT-2 config: KV-cache decoding, the same greedy tokens from the same weights
  out = bench.main(['--smoke', '--threads', '1', '--models', 'gpt2', '--only', 'decode'])
  _check_rates(out['gpt2/decode'], ('ours', 'torch'))
  assert out['gpt2/decode']['unit'] == 'tok/s'
  assert out['_']['agree']['gpt2']['rel'] < 1e-5
  assert out['_']['agree']['gpt2 greedy tokens']['same'] >= 0.75, out['_']['agree']
