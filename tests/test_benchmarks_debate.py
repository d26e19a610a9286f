"""benchmarks/debate_cost.py at its smoke sizes: both parts run and report what they measured."""
import importlib.util
import math
import os

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks',
                     'debate_cost.py')

pytest.importorskip('transformers')


def _load():
  spec = importlib.util.spec_from_file_location('debate_cost_bench', BENCH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.slow
def test_debate_cost_smoke(capsys):
  out = _load().main(['--smoke'])
  printed = capsys.readouterr().out
  (rate,) = out['rates']
  assert rate['batch'] == 8 and rate['new_tokens'] == 8 * 4, rate  # every row runs to --new
  assert math.isfinite(rate['tok_s']) and rate['tok_s'] > 0
  cold, warm = out['cold'], out['warm']
  # 48 questions x 2 candidates = 96 examples; debate and consultancy x 2 seeds each
  assert cold['transcripts']['generated_examples'] == 4 * 96, printed
  assert cold['transcripts']['new_tokens'] == 96 * 2 * (3 + 1) * 4  # turns x new tokens
  for part in ('transcripts', 'weak models', 'ceiling', 'students'):
    assert cold['timing'][part] > 0, part
  assert warm['transcripts']['generated_examples'] == 0
  assert warm['transcripts']['new_tokens'] == 0
  assert warm['timing']['transcripts'] < cold['timing']['transcripts']
  assert 'cost split: transcripts' in printed
