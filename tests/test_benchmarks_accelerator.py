"""benchmarks/accelerator_check.py --smoke on the CPU: every benchmark reports a number (or says
it is not built), the goals say 'n/a on CPU', and a failing benchmark is one row, not a crash."""
import importlib.util
import json
import math
import os

import pytest

pytest.importorskip('torch')
pytest.importorskip('transformers')

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'accelerator_check.py')


def _load():
  spec = importlib.util.spec_from_file_location('accelerator_check_bench', BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _table_rows(md: str) -> list[list[str]]:
  rows = [l for l in md.splitlines() if l.startswith('| ')]  # the header, then one per benchmark
  return [[c.strip() for c in l.strip('|').split('|')] for l in rows]


@pytest.fixture
def torch_threads():
  import torch
  threads = torch.get_num_threads()
  yield
  assert torch.get_num_threads() == threads  # the check hands vs_torch's setting back


def test_accelerator_check_smoke(tmp_path, capsys, torch_threads):  # pylint: disable=redefined-outer-name,unused-argument
  bench = _load()
  assert bench.cli(['--smoke', '--out', str(tmp_path)]) == 0
  printed = capsys.readouterr().out
  with open(tmp_path / 'accelerator_check.json', encoding='utf-8') as f:
    data = json.load(f)
  env = data['environment']
  # the tests' 8 fake CPU devices (conftest.py)
  assert (env['platform'], env['device_kind'], env['device_count']) == ('cpu', 'cpu', 8), env
  assert set(env['cpu_flags']) == {'avx2', 'avx512f', 'avx512_bf16', 'amx'}, env
  assert env['jax'] and env['jaxlib'] and env['torch'] and env['date'] and env['smoke']
  rows = {r['name']: r for r in data['rows']}
  assert list(rows) == list(bench.NAMES) and data['failed'] == [], data['failed']
  for name, r in rows.items():
    if name == 'sft_dpo':
      assert r['status'] == r['value'] == 'not built' and 'issue 20' in r['figure'], r
      continue
    assert r['status'] == 'ok' and r['error'] is None, r
    assert isinstance(r['value'], float) and math.isfinite(r['value']) and r['value'] > 0, r
    assert isinstance(r['ratio'], float) and r['ratio'] > 0, r  # 8 devices: fsdp/dp is measured
    assert r['result'] and r['seconds'] > 0, r
  assert 0 < rows['mfu']['value'] < 1, rows['mfu']
  assert 'fsdp' in rows['mfu']['result'] and '--layouts' in rows['mfu']['argv']
  assert [g['goal'] for g in rows['mfu']['goals']] == ['MFU >= 40% (0.5B, bf16)',
                                                       'FSDP within 10% of dp']
  assert len(rows['ensemble']['goals']) == 1
  checks = [g['check'] for r in rows.values() for g in r['goals']]
  assert checks == ['n/a on CPU'] * 3, checks
  assert '--bf16' not in rows['step_vs_torch']['argv'] and 'fp32, torch on cpu' in \
      rows['step_vs_torch']['figure']

  md = (tmp_path / 'accelerator_check.md').read_text(encoding='utf-8')
  assert 'device: 8 x cpu (platform cpu)' in md and 'CPU flags: avx2' in md, md
  assert 'jax ' in md and 'torch ' in md
  table = _table_rows(md)
  assert table[0][:3] == ['benchmark', 'status', 'headline'], md
  assert [r[0] for r in table[1:]] == [bench.TITLES[n] for n in bench.NAMES], md
  by_title = {r[0]: r for r in table[1:]}
  for name in ('mfu', 'ensemble'):
    assert 'n/a on CPU' in by_title[bench.TITLES[name]][5], md
  assert by_title[bench.TITLES['sft_dpo']][1:3] == ['not built', 'not built'], md
  for k, name in enumerate(bench.NAMES, 1):
    assert f'[accelerator_check {k}/6] {name}: ' in printed, printed


def test_failing_benchmark_is_a_failed_row(tmp_path, monkeypatch, capsys):
  bench = _load()

  def boom(mod, argv, env):
    raise RuntimeError('RESOURCE_EXHAUSTED: out of memory\nthe rest of a long message')

  monkeypatch.setattr(bench, 'row_decoding', boom)
  assert bench.cli(['--smoke', '--only', 'decoding,sft_dpo', '--out', str(tmp_path)]) == 1
  printed = capsys.readouterr().out
  data = json.loads((tmp_path / 'accelerator_check.json').read_text(encoding='utf-8'))
  assert data['failed'] == ['decoding']
  dec, sft = data['rows']
  assert dec['status'] == 'failed' and dec['value'] is None, dec
  assert dec['error'] == 'RuntimeError: RESOURCE_EXHAUSTED: out of memory', dec
  assert sft['status'] == 'not built'  # ran after the failure
  table = _table_rows((tmp_path / 'accelerator_check.md').read_text(encoding='utf-8'))
  assert table[1][:2] == [bench.TITLES['decoding'], 'failed'] and 'out of memory' in table[1][4]
  assert 'FAILED: decoding' in printed


class _Fake:
  """A benchmark module whose main(argv) records argv and returns canned figures."""

  def __init__(self, out):
    self.out, self.argv = out, None

  def main(self, argv):
    self.argv = argv
    return self.out


def test_goals_and_peaks_on_an_accelerator():
  bench = _load()
  gpu = dict(platform='gpu', smoke=False, device_kind='NVIDIA H100 80GB HBM3', device_count=1,
             tier='accelerator')
  g = lambda env, v: bench.goal(env, 'MFU', v, 0.40, '{:.1%}')['check']
  assert g(gpu, 0.452) == 'met (45.2% >= 40.0%)'
  assert g(gpu, 0.31) == 'MISSED (31.0% < 40.0%)'
  assert g(dict(gpu, smoke=True), 0.45) == 'n/a at --smoke sizes'
  assert g(dict(gpu, platform='cpu'), 0.45) == 'n/a on CPU'
  peaks = {'NVIDIA H100 80GB HBM3': 989, 'NVIDIA H100 PCIe': 756, 'NVIDIA H200': 989,
           'NVIDIA A100-SXM4-80GB': 312, 'TPU v5 lite': 197, 'TPU v5': 459, 'TPU v4': 275,
           'cpu': None, 'NVIDIA L40S': None}
  assert {k: bench.peak_tflops(k) for k in peaks} == peaks

  # one GPU: dp only (fsdp is the same layout), bf16, the datasheet peak, both goals checked
  fake = _Fake({'dp': dict(mfu=0.45, tokens_per_s=1e5), '_': {}})
  row = bench.row_mfu(fake, list(bench.SIZES['mfu']['accelerator']), gpu)
  assert fake.argv[-4:] == ['--layouts', 'dp', '--peak_tflops', '989.0'], fake.argv
  assert fake.argv.count('--dtype') == 1 and 'bfloat16' in fake.argv
  assert row['ratio'] is None and 'same layout as dp' in row['figure']
  assert [g['check'] for g in row['goals']] == ['met (45.0% >= 40.0%)',
                                                'n/a: one device, fsdp = dp (same layout)']
  # two devices: fsdp at 0.85x dp misses the 10% goal
  fake = _Fake({'dp': dict(mfu=0.45, tokens_per_s=1e5), 'fsdp': dict(mfu=0.38, tokens_per_s=8.5e4),
                '_': {}})
  row = bench.row_mfu(fake, ['--model', 'llama:qwen2-0.5b'], dict(gpu, device_count=2))
  assert '--layouts' in fake.argv and fake.argv[fake.argv.index('--layouts') + 1] == 'dp,fsdp'
  assert math.isclose(row['ratio'], 0.85)
  assert row['goals'][1]['check'] == 'MISSED (0.85x < 0.90x)', row['goals']

  # ensemble: the steady-state speed-up is the goal's figure
  fake = _Fake({'step_s': {'separate': 8e-3, 'vmapped': 1e-3}, 'speedup': 8.0,
                'end_to_end_speedup': 5.0})
  row = bench.row_ensemble(fake, ['--members', '8'], gpu)
  assert row['goals'][0]['check'] == 'met (8.0x >= 4.0x)' and 'K=8' in row['figure']


def test_step_vs_torch_row_on_an_accelerator(torch_threads):  # pylint: disable=redefined-outer-name,unused-argument
  import torch
  bench = _load()
  gpu = dict(platform='gpu', smoke=False, device_kind='TPU v4', device_count=1, tier='accelerator')
  args = dict(device='cuda' if torch.cuda.is_available() else 'cpu', batch=32, seq=128, bf16=True)
  fake = _Fake({'minilm/step': dict(ours=300.0, torch=200.0, ratio=1.5),
                'gpt2/step': dict(ours=100.0, torch=50.0, ratio=2.0), '_': dict(args=args)})
  row = bench.row_step_vs_torch(fake, list(bench.SIZES['step_vs_torch']['accelerator']), gpu)
  assert fake.argv.count('--bf16') == 1
  if torch.cuda.is_available():
    assert fake.argv[-2:] == ['--device', 'cuda']
  else:  # torch on the host CPU beside the accelerator: said, and MiniLM only
    assert fake.argv[-2:] == ['--models', 'minilm'] and 'not like for like' in row['figure']
  assert (row['value'], row['ratio']) == (300.0, 1.5) and 'gpt2 [32, 128]' in row['figure']
