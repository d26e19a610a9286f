"""benchmarks/memory_plan_7b.py in its fast mode (abstract shapes only) on the 8 fake CPU devices:
published parameter counts, LoRA's share, FSDP's 1/8 per device, and the measured residuals
against hand-computed sizes."""
import importlib.util
import json
import os

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'memory_plan_7b.py')
PLANS = '7b-lora-fsdp8,7b-lora-1dev,0.5b-full-1dev'
# Qwen2.5-7B: hidden, layers, heads, kv heads, head dim, intermediate, vocab
D, L, H, KV, DH, I, V = 3584, 28, 28, 4, 128, 18944, 152064


def _load():
  spec = importlib.util.spec_from_file_location('memory_plan_7b', BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  mod = _load()
  out = str(tmp_path_factory.mktemp('plan') / 'plan.json')
  results = mod.main(['--plans', PLANS, '--json', out])
  return mod, {r['plan']: r for r in results}, out


def _qwen_params(d, layers, kv, dh, mlp, vocab, tied):
  """Hand count: embedding, per layer q/k/v (+ bias) o, gate/up/down, 2 norms; final norm; head."""
  layer = d * d + d + 2 * (d * kv * dh + kv * dh) + d * d + 3 * d * mlp + 2 * d
  return vocab * d * (1 if tied else 2) + layers * layer + d


def test_parameter_counts_match_published_and_hand_count(run):
  mod, res, _ = run
  n7 = res['7b-lora-fsdp8']['counts']['checkpoint']
  n05 = res['0.5b-full-1dev']['counts']['checkpoint']
  assert n7 == _qwen_params(D, L, KV, DH, I, V, tied=False) == 7_615_616_512
  assert n05 == _qwen_params(896, 24, 2, 64, 4864, 151936, tied=True) == 494_032_768
  assert abs(n7 - 7.62e9) <= 0.01 * 7.62e9 and abs(n05 - 0.49e9) <= 0.02 * 0.49e9
  bad = dict(res['7b-lora-fsdp8'], counts=dict(res['7b-lora-fsdp8']['counts'], checkpoint=8e9))
  with pytest.raises(AssertionError, match='published'):
    mod.check_counts(bad)


def test_lora_trains_under_one_percent(run):
  _, res, _ = run
  c = res['7b-lora-fsdp8']['counts']
  rank = 16  # q, o: D -> D; k, v: D -> KV*DH; gate, up: D -> I; down: I -> D
  assert c['adapters'] == L * rank * (2 * (D + D) + 2 * (D + KV * DH) + 3 * (D + I))
  assert (c['adapters'] + c['head']) / sum(c.values()) < 0.01


def test_fsdp_shards_frozen_weights_eight_ways(run):
  _, res, _ = run
  sharded, whole = res['7b-lora-fsdp8'], res['7b-lora-1dev']
  total = whole['per_device']['params_frozen']  # one device holds every frozen weight
  assert total == pytest.approx(2 * sharded['counts']['checkpoint'], rel=1e-6)  # bf16
  assert sharded['per_device']['params_frozen'] == pytest.approx(total / 8, rel=0.03)
  assert sharded['per_device']['params_frozen'] > total / 8  # small norms/biases replicated
  # float32 master copy + Adam mu and nu of the trainable leaves only (1 device: nothing sharded)
  trained = whole['counts']['adapters'] + whole['counts']['head']
  assert whole['per_device']['opt_state'] == pytest.approx(12 * trained, rel=1e-3)


def test_residuals_match_hand_sizes(run):
  mod, res, _ = run
  spec = mod.PLANS['7b-lora-fsdp8']
  key = tuple((k, spec[k]) for k in ('size', 'lora', 'dtype', 'param_dtype'))
  m = mod.residual_model(key, 512, True)
  # remat keeps each block's bf16 input [T, D] per row; the loss keeps f32 logits [T - 1, V]
  assert m['other']['a'] == 512 * D * 2
  assert m['logits']['c1'] == 511 * V * 4
  r = res['7b-lora-fsdp8']
  assert r['micro_batch'] == 4
  assert r['detail']['logits_grad'] == 4 * 512 * V * 4
  per = r['per_device']
  assert per['total'] == sum(per[k] for k in mod.ROWS[:-1])
  assert r['detail']['total_without_remat'] > per['total']  # keeping every block costs more
  assert r['h100_fraction'] < 0.5  # the LoRA + FSDP plan fits an 80 GiB H100 with room
  assert res['0.5b-full-1dev']['h100_fraction'] > 1  # float32, no remat, b=32: it does not


def test_json_and_table(run, capsys):
  mod, res, path = run
  with open(path) as f:
    saved = json.load(f)
  assert [r['plan'] for r in saved] == PLANS.split(',')
  assert saved[0]['per_device']['total'] == res['7b-lora-fsdp8']['per_device']['total']
  text = mod.table(res['7b-lora-fsdp8'])
  assert '| params, frozen |' in text and 'fraction of an 80 GiB H100' in text
  assert np.isfinite(saved[0]['h100_fraction'])
