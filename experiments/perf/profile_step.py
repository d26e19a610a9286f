"""Where a jitted MiniLM step's time goes on XLA:CPU: a jax.profiler trace aggregated per HLO op.

    .venv/bin/python experiments/perf/profile_step.py [--extract] [--steps 3] [--top 40]

Traces --steps calls after warm-up and sums the durations of the events on XLA's CPU threads by
name (thunk = HLO instruction), printing each one's share of the traced op time. Shares are
robust to load; absolute times are not.
"""
import argparse
import collections
import glob
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(ROOT, 'benchmarks'), ROOT]
if os.environ.get('W2S_MALLOPT', '1') != '0':
  import host_malloc  # noqa: E402
  host_malloc.enable()
import jax  # noqa: E402
from jax._src.lib import _profile_data  # noqa: E402
import vs_torch  # noqa: E402


def aggregate(path):
  pd = _profile_data.ProfileData.from_file(path)
  tot, cnt, planes = collections.Counter(), collections.Counter(), []
  for plane in pd.planes:
    planes.append(plane.name)
    if plane.name != '/host:CPU':
      continue
    for line in plane.lines:
      for ev in line.events:
        tot[(line.name, ev.name)] += ev.duration_ns
        cnt[(line.name, ev.name)] += 1
  return tot, cnt


SKIP = ('ThunkExecutor', '$', 'PjitFunction', 'SlinkyThreadPool', 'TfrtCpu', 'PjRt')
INSTR = re.compile(r'^\s*%?([\w.-]+) = (\S+) (\w[\w-]*)\(.*?(?:calls=%?([\w.-]+))?.*?'
                   r'(?:op_name="([^"]*)")?')


def hlo_index(text):
  """instruction name -> (shape, opcode, op_name) of the entry computation's instructions."""
  out = {}
  for line in text.splitlines():
    m = re.match(r'^\s*(?:ROOT )?%?([\w.-]+) = (\S+) ([\w-]+)\(', line)
    if m:
      name = re.search(r'op_name="([^"]*)"', line)
      out[m.group(1)] = (m.group(2), m.group(3), name.group(1) if name else '')
  return out


def category(op_name):
  """'jit(train_step)/transpose(jvp(TextClassifier))/.../layer_3/attention/q/dot_general' ->
  'bwd attention/q/dot_general' (layers merged)."""
  bwd = 'transpose(' in op_name
  s = re.sub(r'^jit\([^)]*\)/', '', op_name)
  s = re.sub(r'(transpose\()?jvp\(TextClassifier\)\)?/', '', s)
  s = re.sub(r'TextClassifier\.features/backbone/', '', s)
  s = re.sub(r'layer_\d+/', '', s)
  return ('bwd ' if bwd else 'fwd ') + s


def group(key):
  """A category -> 'dense' (the projection / MLP matmuls, their transposes), 'attention core'
  (everything else under attention/), 'gelu', 'layernorm', 'embeddings', 'optimizer and rest'."""
  if re.search(r'(^|[ /])(q|k|v|o|intermediate|output)/(dot_general|transpose)', key):
    return 'dense'
  if '/attention/' in key or key.split(' ')[1].startswith('attention/'):
    return 'attention core'
  if 'erf' in key or ' mul [' in key or 'add_any [' in key:
    return 'gelu and residual'
  if '_ln/' in key:
    return 'layernorm'
  if 'embeddings' in key:
    return 'embeddings'
  return 'optimizer and rest'


def compiled_of(side):
  return next(c.cell_contents for c in side.call.__closure__
              if hasattr(c.cell_contents, 'as_text'))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--extract', action='store_true')
  ap.add_argument('--steps', type=int, default=3)
  ap.add_argument('--top', type=int, default=40)
  ap.add_argument('--seq', default='64')
  a = ap.parse_args()
  args = vs_torch.parse(['--only', 'step', '--models', 'minilm', '--seq', a.seq])
  pair = vs_torch.build('minilm', args, tempfile.mkdtemp())
  ours = (vs_torch.extract_sides if a.extract else vs_torch.step_sides)(pair, args)[0]
  ours.warm(4)
  d = tempfile.mkdtemp()
  with jax.profiler.trace(d):
    ours.block(a.steps)
  tot, cnt = aggregate(glob.glob(f'{d}/**/*.xplane.pb', recursive=True)[0])
  lines = collections.Counter()
  for (line, _), v in tot.items():
    lines[line] += v
  print('per thread line (ms/step):', {k: round(v / 1e6 / a.steps, 1) for k, v in lines.most_common(12)})
  # XLA's ops: events on the XLA worker lines that are not the executable/runtime wrappers
  index = hlo_index(compiled_of(ours).as_text())
  ops, n, shapes = collections.Counter(), collections.Counter(), {}
  for (line, name), v in tot.items():
    if name.startswith(SKIP) or name not in index:
      continue
    shape, opcode, op_name = index[name]
    key = f'{category(op_name)} [{opcode}]'
    ops[key] += v
    n[key] += cnt[(line, name)]
    shapes.setdefault(key, set()).add(shape)
  total = sum(ops.values())
  print(f'op time {total / 1e6 / a.steps:.0f} ms/step over {sum(n.values()) // a.steps} ops')
  groups = collections.Counter()
  for key, v in ops.items():
    groups[group(key)] += v
  print('groups (ms/step):', {g: round(v / 1e6 / a.steps, 1) for g, v in groups.most_common()})
  print(f'{"ms/step":>8} {"share":>6} {"calls":>6}  category [opcode] shapes')
  for key, v in ops.most_common(a.top):
    print(f'{v / 1e6 / a.steps:8.1f} {v / total:6.1%} {n[key] // a.steps:6d}  {key[:90]} '
          f'{",".join(sorted(shapes[key]))[:60]}')


if __name__ == '__main__':
  main()
