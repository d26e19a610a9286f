"""One command for accelerators (issue 22): the benchmarks that matter on a GPU / TPU, one table.

    python benchmarks/accelerator_check.py --out /tmp/accel           # on whatever devices exist
    python benchmarks/accelerator_check.py --smoke --out /tmp/accel   # tiny sizes (CPU: < 2 min)
    python benchmarks/accelerator_check.py --only mfu,ensemble --out /tmp/accel

Each benchmark is its script's own `main(argv)`, called in this process at the sizes of `SIZES`
(one tier each: 'accelerator' when JAX's default platform is not the CPU, 'cpu', or 'smoke'):
  step_vs_torch  benchmarks/vs_torch.py: one fine-tuning step of MiniLM (+ GPT-2 small on an
                 accelerator) against transformers + torch, same weights; bf16 on an accelerator
                 with torch on CUDA when torch sees a GPU, fp32 on the CPU
  mfu            benchmarks/sharding_throughput.py: MFU of the full fine-tune of a Qwen2-0.5B-shaped
                 decoder (llama:qwen2-0.5b, random init, bf16 compute, fp32 master weights), data
                 parallel vs FSDP; on one device both are the same layout, so only dp runs
  ensemble       benchmarks/ensemble_vmap.py: K=8 weak MLPs as one vmapped step vs 8 separate
                 steps (steady state, compiles apart; the end-to-end ratio is shown beside it)
  ssl            benchmarks/ssl_step.py: the FixMatch step vs the plain supervised step
  decoding       benchmarks/models_decoding.py: KV-cache greedy decoding tokens/s vs recompute
  sft_dpo        generative SFT / DPO steps: not built yet (issue 20); a row saying so, no number
Issue 22's goals are checked on an accelerator and marked 'n/a on CPU' on a CPU (and 'n/a at
--smoke sizes' for a smoke run on an accelerator): MFU >= 40% for the 0.5B full fine-tune in bf16
(against the datasheet's dense bf16 peak of the device, `PEAK_TFLOPS`; a device not listed there
is measured with a large matmul, which flatters the MFU, and the row says so); FSDP throughput
within 10% of data parallel (needs >= 2 devices); the vmapped ensemble >= 4x the separate runs.
A missed goal is a result, not a failure: the table says MISSED and the exit status stays 0.

Every benchmark runs in its own try block: one that fails is a 'failed' row with its one-line
error (the traceback on stderr), the others still run, and the script exits 1. Progress lines
('[k/n] name ... elapsed') go to stdout between the benchmarks' own output. Writes, atomically,
--out/accelerator_check.json (environment + every row with the benchmark's own returned figures)
and --out/accelerator_check.md (device line, versions, the table).
"""
import argparse
import datetime
import importlib
import importlib.metadata
import json
import math
import os
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

NAMES = ('step_vs_torch', 'mfu', 'ensemble', 'ssl', 'decoding', 'sft_dpo')
SCRIPTS = {'step_vs_torch': 'vs_torch', 'mfu': 'sharding_throughput', 'ensemble': 'ensemble_vmap',
           'ssl': 'ssl_step', 'decoding': 'models_decoding', 'sft_dpo': None}
TITLES = {'step_vs_torch': 'fine-tuning step vs torch', 'mfu': 'Qwen2-0.5B-shaped MFU, dp vs FSDP',
          'ensemble': 'vmapped K=8 ensemble vs 8 runs', 'ssl': 'SSL step (FixMatch)',
          'decoding': 'KV-cache decoding', 'sft_dpo': 'generative SFT / DPO steps'}
SIZES = {  # argv of each script per tier; device-dependent flags are added by the row functions
    'step_vs_torch': {
        'accelerator': ['--only', 'step', '--models', 'minilm,gpt2', '--batch', '32', '--seq',
                        '128', '--bf16'],
        'cpu': ['--only', 'step', '--models', 'minilm'],
        'smoke': ['--smoke', '--only', 'step', '--models', 'minilm', '--threads', '1'],
    },
    'mfu': {
        'accelerator': ['--model', 'llama:qwen2-0.5b', '--batch', '16', '--seq', '512', '--dtype',
                        'bfloat16', '--steps', '5', '--repeats', '3'],
        'cpu': ['--model', 'llama:qwen2-0.5b', '--arch', 'num_layers=2', '--batch', '8', '--seq',
                '128', '--steps', '2', '--repeats', '2'],
        'smoke': ['--model', 'llama:qwen2-tiny', '--arch', 'num_layers=1', '--batch', '8', '--seq',
                  '16', '--steps', '1', '--repeats', '1'],
    },
    'ensemble': {
        'accelerator': ['--members', '8', '--steps', '200', '--repeats', '1', '--blocks', '5'],
        'cpu': ['--members', '8', '--steps', '100', '--repeats', '1', '--blocks', '3'],
        'smoke': ['--smoke', '--hidden', '32'],
    },
    'ssl': {
        'accelerator': ['--algos', 'supervised,fixmatch', '--steps', '5', '--blocks', '5'],
        'cpu': ['--algos', 'supervised,fixmatch', '--steps', '2', '--blocks', '3'],
        'smoke': ['--algos', 'supervised,fixmatch', '--batch', '8', '--mu', '2', '--steps', '1',
                  '--blocks', '2', '--aug_repeats', '1'],
    },
    'decoding': {
        'accelerator': ['--model', 'llama:qwen2-0.5b', '--batch', '8', '--prompt', '64', '--new',
                        '64', '--dtype', 'bfloat16'],
        'cpu': [],
        'smoke': ['--model', 'llama:tiny', '--batch', '2', '--prompt', '8', '--new', '4',
                  '--repeats', '1'],
    },
    'sft_dpo': {'accelerator': [], 'cpu': [], 'smoke': []},
}
# dense bf16 TFLOP/s of one device (NVIDIA datasheets; Google Cloud TPU docs), matched in order
# as a substring of jax's device_kind; the first match wins
PEAK_TFLOPS = (('H100 PCIe', 756.0), ('H100 NVL', 835.0), ('H100', 989.0), ('H200', 989.0),
               ('A100', 312.0), ('TPU v4', 275.0), ('TPU v5 lite', 197.0), ('TPU v5e', 197.0),
               ('TPU v5p', 459.0), ('TPU v5', 459.0), ('TPU v6 lite', 918.0),
               ('TPU v6e', 918.0))
GOALS = {'mfu': 0.40, 'fsdp': 0.90, 'ensemble': 4.0}
NOT_BUILT = 'not built'


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--out', required=True, help='directory for accelerator_check.{json,md}')
  ap.add_argument('--smoke', action='store_true', help='tiny sizes (under 2 minutes on a CPU)')
  ap.add_argument('--only', default=','.join(NAMES), help='benchmarks, comma-separated')
  args = ap.parse_args(argv)
  args.only = [n for n in args.only.split(',') if n]
  bad = sorted(set(args.only) - set(NAMES))
  if bad:
    ap.error(f'--only has {bad}; choose from {",".join(NAMES)}')
  return args


def cpu_flags() -> dict | None:
  """The host CPU's vector / matrix extensions from /proc/cpuinfo (None where it is unreadable)."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      line = next((l for l in f if l.startswith('flags')), '')
  except OSError:
    return None
  flags = set(line.partition(':')[2].split())
  if not flags:
    return None
  return {'avx2': 'avx2' in flags, 'avx512f': 'avx512f' in flags,
          'avx512_bf16': 'avx512_bf16' in flags, 'amx': any(f.startswith('amx') for f in flags)}


def _version(pkg: str) -> str:
  try:
    return importlib.metadata.version(pkg)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def environment(smoke: bool) -> dict:
  dev = jax.devices()[0]
  cpu = dev.platform == 'cpu'
  return dict(date=datetime.datetime.now().isoformat(timespec='seconds'), platform=dev.platform,
              device_kind=dev.device_kind, device_count=jax.device_count(),
              tier='smoke' if smoke else 'cpu' if cpu else 'accelerator', smoke=smoke,
              cpu_flags=cpu_flags() if cpu else None, host_cores=os.cpu_count(),
              load_start=os.getloadavg()[0], jax=jax.__version__, jaxlib=_version('jaxlib'),
              flax=_version('flax'), torch=_version('torch'))


def peak_tflops(device_kind: str) -> float | None:
  return next((v for k, v in PEAK_TFLOPS if k.lower() in device_kind.lower()), None)


def goal(env: dict, text: str, value: float | None, target: float, fmt: str) -> dict:
  """{'goal': text, 'check': 'met (...)' / 'MISSED (...)' / 'n/a ...'}, `fmt` formats numbers."""
  if env['platform'] == 'cpu':
    check = 'n/a on CPU'
  elif env['smoke']:
    check = 'n/a at --smoke sizes'
  elif value is None:
    check = 'n/a'
  else:
    ok = value >= target
    check = f'{"met" if ok else "MISSED"} ({fmt.format(value)} {">=" if ok else "<"} ' \
            f'{fmt.format(target)})'
  return dict(goal=text, check=check)


def bf16(argv: list, env: dict) -> list:
  """`--dtype bfloat16` on an accelerator (its --smoke sizes too) unless argv names a dtype."""
  return argv + ['--dtype', 'bfloat16'] * (env['platform'] != 'cpu' and '--dtype' not in argv)


def row_step_vs_torch(mod, argv: list, env: dict) -> dict:
  """vs_torch's step: ours ex/s of the first model, ours / torch; the figure names every model."""
  import torch  # vs_torch imported it already
  if env['platform'] != 'cpu':  # bf16 (also at --smoke sizes), torch on the GPU where it sees one
    argv = argv + ['--bf16'] * ('--bf16' not in argv)
    # torch without a GPU (a TPU host) runs on the host CPU: not like for like, and MiniLM only,
    # since GPT-2 small in bf16 there would take minutes (argparse: the last --models wins)
    argv += ['--device', 'cuda'] if torch.cuda.is_available() else ['--models', 'minilm']
  threads, precision = torch.get_num_threads(), jax.config.jax_default_matmul_precision
  try:  # main() sets both for the whole process; the later benchmarks get them back
    out = mod.main(argv)
  finally:
    torch.set_num_threads(threads)
    jax.config.update('jax_default_matmul_precision', precision)
    if torch.cuda.is_available():
      torch.cuda.empty_cache()
  a = out['_']['args']
  where = a['device'] + ('' if a['device'] != 'cpu' or env['platform'] == 'cpu'
                         else ': not like for like')
  parts = [f'{k.split("/")[0]} [{a["batch"]}, {a["seq"]}]: ours {v["ours"]:.1f} vs torch '
           f'{v["torch"]:.1f} ex/s ({v["ratio"]:.2f}x)' for k, v in out.items() if k != '_']
  first = out[next(k for k in out if k != '_')]
  return dict(argv=argv, value=first['ours'], unit='ex/s', ratio=first['ratio'],
              ratio_of='ours / torch', goals=[], result=out,
              figure=f'{"; ".join(parts)}; {"bf16" if a["bf16"] else "fp32"}, torch on {where}')


def row_mfu(mod, argv: list, env: dict) -> dict:
  """sharding_throughput: dp's MFU, fsdp / dp tokens/s (>= 2 devices); the MFU and FSDP goals."""
  n = env['device_count']
  argv = bf16(argv, env) + ['--layouts', 'dp,fsdp' if n > 1 else 'dp']
  peak = peak_tflops(env['device_kind']) if env['platform'] != 'cpu' else None
  if peak:
    argv += ['--peak_tflops', str(peak)]
  out = mod.main(argv)
  dp, fsdp = out['dp'], out.get('fsdp')
  src = f'datasheet peak {peak:g} TFLOP/s' if peak else 'peak measured by a matmul'
  fig = f'dp {dp["mfu"]:.1%} MFU ({dp["tokens_per_s"]:,.0f} tok/s)'
  if fsdp:
    ratio = fsdp['tokens_per_s'] / dp['tokens_per_s']
    fig += f', fsdp {fsdp["mfu"]:.1%} ({ratio:.2f}x dp tok/s)'
    fsdp_goal = goal(env, 'FSDP within 10% of dp', ratio, GOALS['fsdp'], '{:.2f}x')
  else:
    ratio = None
    fig += '; one device: fsdp is the same layout as dp'
    fsdp_goal = dict(goal='FSDP within 10% of dp',
                     check='n/a on CPU' if env['platform'] == 'cpu' else
                     'n/a: one device, fsdp = dp (same layout)')
  dtype = argv[argv.index('--dtype') + 1] if '--dtype' in argv else 'float32'
  return dict(argv=argv, value=dp['mfu'], unit='MFU', ratio=ratio, ratio_of='fsdp / dp tok/s',
              figure=f'{fig}; {dtype}, {src}', result=out,
              goals=[goal(env, 'MFU >= 40% (0.5B, bf16)', dp['mfu'], GOALS['mfu'], '{:.1%}'),
                     fsdp_goal])


def row_ensemble(mod, argv: list, env: dict) -> dict:
  """ensemble_vmap: the vmapped step's time and its steady-state speed-up (the >= 4x goal)."""
  out = mod.main(argv)
  # ensemble_vmap's --smoke sets 2 members whatever --members says
  k = ('2' if '--smoke' in argv else
       argv[argv.index('--members') + 1] if '--members' in argv else '8')
  step = out['step_s']
  fig = (f'K={k}: one vmapped step {1e3 * step["vmapped"]:.2f} ms vs {k} steps '
         f'{1e3 * step["separate"]:.2f} ms ({out["speedup"]:.2f}x); end to end '
         f'{out["end_to_end_speedup"]:.2f}x (compiles included)')
  return dict(argv=argv, value=1e3 * step['vmapped'], unit='ms/step (all K)',
              ratio=out['speedup'], ratio_of='separate / vmapped step time', figure=fig,
              result=out, goals=[goal(env, 'vmapped >= 4x separate', out['speedup'],
                                      GOALS['ensemble'], '{:.1f}x')])


def row_ssl(mod, argv: list, env: dict) -> dict:
  """ssl_step: FixMatch's labelled ex/s and its step time over the plain step's."""
  out = mod.main(argv)
  fm, plain = out['steps']['fixmatch'], out['steps']['supervised']
  fig = (f'FixMatch {1e3 * fm["step_s"]:.1f} ms/step ({fm["labelled_per_s"]:.0f} labelled ex/s, '
         f'{fm["views_per_s"]:.0f} views/s) vs plain {1e3 * plain["step_s"]:.1f} ms; '
         f'{fm["time_ratio"]:.1f}x its time, {fm["flops_ratio"]:.1f}x its FLOPs')
  return dict(argv=argv, value=fm['labelled_per_s'], unit='labelled ex/s',
              ratio=fm['time_ratio'], ratio_of='FixMatch / plain step time', figure=fig,
              result=out, goals=[])


def row_decoding(mod, argv: list, env: dict) -> dict:
  """models_decoding: KV-cache tokens/s and its speed-up over recomputing the prefix."""
  argv = bf16(argv, env)
  out = mod.main(argv)
  model = argv[argv.index('--model') + 1] if '--model' in argv else 'llama:tiny'
  fig = (f'{model}: KV cache {out["kv cache"]:.0f} tok/s vs recompute {out["recompute"]:.0f} '
         f'({out["speedup"]:.1f}x), same tokens: {out["same_tokens"]}')
  return dict(argv=argv, value=out['kv cache'], unit='tok/s', ratio=out['speedup'],
              ratio_of='KV cache / recompute', figure=fig, result=out, goals=[])


def row_sft_dpo(mod, argv: list, env: dict) -> dict:
  """No generative SFT / DPO step exists yet (issue 20): a row that says so, not a number."""
  del mod, env
  return dict(argv=argv, status=NOT_BUILT, value=NOT_BUILT, unit='', ratio=None, ratio_of='',
              figure='not built yet (issue 20)', result=None, goals=[])


def one_line(e: BaseException) -> str:
  msg = str(e).strip().splitlines()
  return f'{type(e).__name__}: {msg[0] if msg else ""}'.strip()[:300]


def run_one(name: str, env: dict, k: int, n: int, t0: float) -> dict:
  """One benchmark in its own try block: its row, 'failed' with the one-line error if it raised."""
  argv = list(SIZES[name][env['tier']])
  script = SCRIPTS[name]
  print(f'[accelerator_check {k}/{n}] {name}: {" ".join([script or "placeholder"] + argv)} '
        f'(elapsed {time.perf_counter() - t0:.1f} s)', flush=True)
  t, cpu = time.perf_counter(), time.process_time()
  row = dict(name=name, title=TITLES[name], script=script and f'benchmarks/{script}.py')
  try:
    mod = importlib.import_module(f'benchmarks.{script}') if script else None
    row.update(globals()[f'row_{name}'](mod, argv, env))
    row.setdefault('status', 'ok')
    row['error'] = None
  except (Exception, SystemExit) as e:  # pylint: disable=broad-except  (argparse exits too)
    traceback.print_exc()
    row.update(argv=argv, status='failed', value=None, unit='', ratio=None, ratio_of='',
               figure='failed', error=one_line(e), result=None, goals=[])
  # this process's CPU seconds beside the wall time: on a loaded host the wall time grows, not these
  row['seconds'], row['cpu_seconds'] = time.perf_counter() - t, time.process_time() - cpu
  print(f'[accelerator_check {k}/{n}] {name}: {row["status"]} in {row["seconds"]:.1f} s '
        f'(elapsed {time.perf_counter() - t0:.1f} s)' + (f': {row["error"]}' if row['error'] else
                                                        ''), flush=True)
  return row


def jsonable(x):
  """Plain JSON types; non-finite floats -> None, anything else -> str."""
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, (bool, np.bool_)):
    return bool(x)
  if x is None or isinstance(x, str):
    return x
  if isinstance(x, (int, np.integer)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(float(x)) else None
  return str(x)


def device_line(env: dict) -> str:
  line = (f'device: {env["device_count"]} x {env["device_kind"]} (platform {env["platform"]}); '
          f'{env["date"]}; {env["tier"]} sizes')
  if env['cpu_flags']:
    line += '; CPU flags: ' + ', '.join(f'{k} {"yes" if v else "no"}'
                                         for k, v in env['cpu_flags'].items())
  return line + f'; host load {env["load_start"]:.1f} on {env["host_cores"]} cores at the start'


def markdown(env: dict, rows: list) -> str:
  fmt = lambda v, unit: (v if isinstance(v, str) else '' if v is None else
                         f'{v:.1%}' if unit == 'MFU' else f'{v:,.4g} {unit}')
  lines = ['# Accelerator check (benchmarks/accelerator_check.py)', '', device_line(env), '',
           f'jax {env["jax"]}, jaxlib {env["jaxlib"]}, flax {env["flax"]}, torch {env["torch"]}',
           '', '| benchmark | status | headline | ratio | figures | goals | s |',
           '|---|---|---|---|---|---|---|']
  for r in rows:
    ratio = '' if r['ratio'] is None else f'{r["ratio"]:.2f}x ({r["ratio_of"]})'
    goals = '; '.join(f'{g["goal"]}: {g["check"]}' for g in r['goals']) or '-'
    figure = r['error'] if r['status'] == 'failed' else r['figure']
    lines.append(f'| {r["title"]} | {r["status"]} | {fmt(r["value"], r["unit"])} | {ratio} | '
                 f'{figure.replace("|", "/")} | {goals} | {r["seconds"]:.1f} |')
  return '\n'.join(lines) + '\n'


def write_atomic(path: str, text: str) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.tmp-')
  with os.fdopen(fd, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(tmp, path)


def main(argv=None) -> dict:
  """Runs the benchmarks, writes the JSON and the table; {'environment', 'rows', 'failed', ...}."""
  args = parse(argv)
  os.makedirs(args.out, exist_ok=True)
  env = environment(args.smoke)
  print(device_line(env), flush=True)
  t0 = time.perf_counter()
  rows = [run_one(name, env, k, len(args.only), t0) for k, name in enumerate(args.only, 1)]
  env['load_end'] = os.getloadavg()[0]
  result = dict(environment=env, rows=rows, failed=[r['name'] for r in rows
                                                    if r['status'] == 'failed'],
                seconds=time.perf_counter() - t0)
  result['json'] = os.path.join(args.out, 'accelerator_check.json')
  result['markdown'] = os.path.join(args.out, 'accelerator_check.md')
  write_atomic(result['json'], json.dumps(jsonable(result), indent=1) + '\n')
  table = markdown(env, rows)
  write_atomic(result['markdown'], table)
  print('\n' + table + f'\n{len(rows)} benchmarks in {result["seconds"]:.1f} s; '
        + (f'FAILED: {", ".join(result["failed"])}' if result['failed'] else 'none failed'),
        flush=True)
  return result


def cli(argv=None) -> int:
  """The exit status: 1 when any benchmark failed (a missed goal is no failure), else 0."""
  return 1 if main(argv)['failed'] else 0


if __name__ == '__main__':
  sys.exit(cli())
