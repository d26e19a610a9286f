"""Per-step counters of our MiniLM train step (as benchmarks/vs_torch.py builds it), robust to load.

    .venv/bin/python experiments/perf/step_counters.py [--torch] [--steps 5] [--extract]

Prints the compiled step's memory analysis (XLA buffer assignment: arguments, outputs, temp),
its XLA FLOP count, and per step: minor page faults, sys and user CPU seconds, wall seconds.
"""
import argparse
import os
if os.environ.get('W2S_MALLOPT') == 'early':  # before numpy / torch / jax are imported
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../benchmarks'))
  import host_malloc
  print('mallopt early', host_malloc.enable())
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vs_torch  # noqa: E402


def counters(side, steps, warm=2):
  side.warm(warm)
  f0 = resource.getrusage(resource.RUSAGE_SELF)
  t = time.perf_counter()
  side.block(steps)
  f1 = resource.getrusage(resource.RUSAGE_SELF)
  w = time.perf_counter() - t
  print(f'{side.label:6s} minflt/step {(f1.ru_minflt - f0.ru_minflt) / steps:9.0f}  '
        f'sys s/step {(f1.ru_stime - f0.ru_stime) / steps:.3f}  '
        f'user s/step {(f1.ru_utime - f0.ru_utime) / steps:.3f}  wall s/step {w / steps:.3f}  '
        f'load {os.getloadavg()[0]:.2f}', flush=True)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--torch', action='store_true')
  ap.add_argument('--extract', action='store_true')
  ap.add_argument('--steps', type=int, default=5)
  ap.add_argument('--seq', default='64')
  ap.add_argument('--warm', type=int, default=2)
  a = ap.parse_args()
  if os.environ.get('W2S_MALLOPT') == 'late':  # after numpy / torch / jax imports, before jax starts
    import host_malloc
    print('mallopt late', host_malloc.enable())
  args = vs_torch.parse(['--only', 'step', '--models', 'minilm', '--seq', a.seq])
  pair = vs_torch.build('minilm', args, tempfile.mkdtemp())
  sides = vs_torch.extract_sides(pair, args) if a.extract else vs_torch.step_sides(pair, args)
  ours = sides[0]
  c = ours.call.__closure__  # the compiled executable, for its analyses
  compiled = next(x.cell_contents for x in c if hasattr(x.cell_contents, 'memory_analysis'))
  m = compiled.memory_analysis()
  print(f'memory: args {m.argument_size_in_bytes/1e6:.1f} MB, out {m.output_size_in_bytes/1e6:.1f}'
        f' MB, alias {m.alias_size_in_bytes/1e6:.1f} MB, temp {m.temp_size_in_bytes/1e6:.1f} MB, '
        f'code {m.generated_code_size_in_bytes/1e6:.1f} MB')
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  print(f'flops {cost.get("flops", 0)/1e9:.2f} G, bytes accessed {cost.get("bytes accessed", 0)/1e9:.2f} GB')
  counters(ours, a.steps, a.warm)
  if a.torch:
    counters(sides[1], a.steps, a.warm)


if __name__ == '__main__':
  main()
