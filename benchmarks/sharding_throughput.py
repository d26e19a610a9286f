"""Train-step throughput and MFU of one model: data parallel vs FSDP (vs FSDP + tensor parallel).

  CPU (8 fake devices, under a minute on 2 cores):
    python benchmarks/sharding_throughput.py --fake_devices 8
  GPU (all devices of the default backend; H100 / H200 bf16 dense peak is ~989 TFLOP/s per chip):
    python benchmarks/sharding_throughput.py --model gpt2:medium --batch 32 --seq 512 \
        --dtype bfloat16 --peak_tflops 989
    python benchmarks/sharding_throughput.py --model llama:qwen2-0.5b --batch 32 --seq 512 \
        --dtype bfloat16 --peak_tflops 989 --layouts dp,fsdp,fsdp+tp
  (on one GPU dp and fsdp are the same single-device step, and fsdp+tp is skipped)

Each layout is what `w2s.train.fit` builds for `train.partition` on the same N devices:
  dp       partition='replicate', mesh data=N                 (params + Adam state replicated)
  fsdp     partition='fsdp', mesh data=N/F, fsdp=F (--fsdp, default N)
  fsdp+tp  partition='fsdp+tp', mesh fsdp=N/P, tensor=P (--tp, default 2; batch split N/P ways)
The state is created already sharded (jit of the init with out_shardings from
`partition.shardings` over `jax.eval_shape`), and `train.train_step` (xent, Adam) is jitted with the
same in/out shardings and state donation as `fit`. Compile time is reported apart; the steady step
time is the median over --repeats blocks of --steps steps, the layouts alternating block by block
so machine noise hits all alike (one warm-up step each, excluded).

Model FLOPs per token (PaLM, Chowdhery et al. 2022, app. B): 6 * N + 12 * L * T * A, with N the
parameters outside embedding tables (a lookup costs no matmul and the classifier has no LM head),
L layers, T the sequence length, A = heads x head dim (full, not causal-halved, attention).
MFU = FLOPs/token x tokens/s / (devices x peak FLOP/s per device); the peak is --peak_tflops or,
without it, measured here: the best of a few large jitted matmuls (fp32 on CPU, the compute dtype
elsewhere) run on every device at once. tiny presets default to --min_bytes 0 (their tensors are
all under the 1 MiB below which partition='fsdp' replicates), others to partition.MIN_BYTES.
"""
import argparse
import functools
import os
import statistics
import sys
import time


def _pre_jax(argv):
  """--fake_devices N: N CPU devices, which XLA reads from XLA_FLAGS before JAX starts."""
  n = argparse.ArgumentParser(add_help=False)
  n.add_argument('--fake_devices', type=int, default=0)
  n = n.parse_known_args(argv)[0].fake_devices
  if n:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={n}').strip()
    os.environ['JAX_PLATFORMS'] = 'cpu'


if __name__ == '__main__':
  _pre_jax(sys.argv[1:])
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from w2s import optim, options, partition, registry, sharding, train  # noqa: E402
from w2s.errors import UserError  # noqa: E402

LAYOUTS = {'dp': 'replicate', 'fsdp': 'fsdp', 'fsdp+tp': 'fsdp+tp'}


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--model', default='gpt2:tiny', help='family:size, e.g. llama:qwen2-0.5b')
  ap.add_argument('--arch', default='', help='Config overrides, e.g. num_layers=4,dropout=0.0')
  ap.add_argument('--batch', type=int, default=32, help='global batch (examples)')
  ap.add_argument('--seq', type=int, default=128)
  ap.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                  help='compute dtype')
  ap.add_argument('--param_dtype', default='float32', choices=('float32', 'bfloat16'),
                  help="train.param_dtype ('bfloat16': float32 master weights in the optimizer)")
  ap.add_argument('--layouts', default='dp,fsdp,fsdp+tp')
  ap.add_argument('--fsdp', type=int, default=0, help="'fsdp' axis size of the fsdp layout (0: N)")
  ap.add_argument('--tp', type=int, default=2, help="'tensor' axis size of the fsdp+tp layout")
  ap.add_argument('--min_bytes', type=int, default=None, help='FSDP rule threshold (see docstring)')
  ap.add_argument('--steps', type=int, default=5, help='steps per timed block')
  ap.add_argument('--repeats', type=int, default=3, help='timed blocks per layout')
  ap.add_argument('--peak_tflops', type=float, default=None, help='peak TFLOP/s of one device')
  ap.add_argument('--fake_devices', type=int, default=0, help='N fake CPU devices (set before JAX)')
  args = ap.parse_args(argv)
  unknown = sorted(set(args.layouts.split(',')) - set(LAYOUTS))
  if unknown:
    ap.error(f'--layouts has {unknown[0]!r}; use a subset of {",".join(LAYOUTS)}')
  if args.min_bytes is None:
    args.min_bytes = 0 if 'tiny' in args.model else partition.MIN_BYTES
  return args


def model_flops_per_token(module, params, seq: int) -> tuple[int, float]:
  """(N parameters outside embedding tables, 6 N + 12 L T A): see the module docstring."""
  n = sum(int(np.prod(x.shape)) for path, x in jax.tree_util.tree_leaves_with_path(params)
          if not partition.path_str(path).endswith('/embedding'))
  c = module.backbone.config
  attn = c.num_heads * getattr(c, 'dh', c.d_model // c.num_heads)
  return n, 6.0 * n + 12.0 * c.num_layers * seq * attn


def peak_flops(devices, dtype: str, peak_tflops: float | None) -> tuple[float, str]:
  """(FLOP/s of all `devices` together, where the figure comes from)."""
  if peak_tflops:
    return peak_tflops * 1e12 * len(devices), '--peak_tflops'
  cpu = devices[0].platform == 'cpu'
  m, dt = (1024, jnp.float32) if cpu else (8192, jnp.dtype(dtype))
  mesh = jax.sharding.Mesh(np.asarray(devices), ('d',))
  sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('d'))
  x = jax.jit(lambda: jnp.ones((len(devices), m, m), dt), out_shardings=sh)()
  mm = jax.jit(lambda a: jnp.einsum('nij,njk->nik', a, a), out_shardings=sh)
  jax.block_until_ready(mm(x))
  best = min(_timed(lambda: jax.block_until_ready(mm(x))) for _ in range(5))
  return 2 * m ** 3 * len(devices) / best, f'measured {m}x{m} {jnp.dtype(dt).name} matmul'


def _timed(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def _batch(batch: int, seq: int, vocab: int) -> dict:
  rs = np.random.RandomState(0)
  return {'input_ids': rs.randint(0, vocab, (batch, seq)).astype(np.int32),
          'attention_mask': np.ones((batch, seq), np.int32),
          'label': np.eye(2, dtype=np.float32)[np.arange(batch) % 2],
          'mask': np.ones(batch, np.float32)}


def _mesh_shape(layout: str, n: int, args) -> dict:
  if layout == 'dp':
    return dict(data=n)
  if layout == 'fsdp':
    return dict(data=-1, fsdp=args.fsdp or n)
  return dict(data=1, fsdp=-1, tensor=args.tp)


def build(layout: str, module, host_batch: dict, args, n_devices: int) -> dict:
  """Mesh, sharded state and compiled step of one layout, as `train.fit` makes them."""
  mesh = sharding.make_mesh(n_devices, _mesh_shape(layout, n_devices, args))
  opts = options.TrainOptions.coerce(dict(
      loss=dict(name='xent'), optimizer=dict(name='adam', learning_rate=1e-5),
      batch_size=args.batch, num_steps=10 ** 6, param_dtype=args.param_dtype,
      partition=dict(rules=LAYOUTS[layout], min_bytes=args.min_bytes)))
  sharding.check_batch_size(opts.batch_size, mesh)
  sample = {k: v[:1] for k, v in host_batch.items()}
  tx, schedule = train._make_tx(opts, opts.num_steps, module, sample)  # private: fit's optimizer

  def init_fn(rng):  # fit's init_fn is a closure inside fit; this is its pretrained=None branch
    p_rng, d_rng, s_rng = jax.random.split(rng, 3)
    params = module.init({'params': p_rng, 'dropout': d_rng}, sample, train=False)['params']
    params = optim.cast_params(params, opts.param_dtype)
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                            rng=s_rng, extra={})

  rng = jax.random.PRNGKey(0)
  abstract = jax.eval_shape(init_fn, rng)
  state_sh = partition.shardings(abstract, mesh, opts.partition,
                                 getattr(module, 'partition_rules', None))
  state = jax.jit(init_fn, out_shardings=state_sh)(rng)
  data, repl = sharding.data_sharded(mesh), sharding.replicated(mesh)
  step_fn = jax.jit(functools.partial(
      train.train_step, apply_fn=train.linen_apply_fn(module), loss_fn=opts.loss.entry(), tx=tx,
      schedule=schedule, total_steps=opts.num_steps), in_shardings=(state_sh, data),
      out_shardings=(state_sh, repl), donate_argnums=0)
  batch = sharding.host_batch_to_global(host_batch, mesh)
  t = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  state, metrics = compiled(state, batch)  # warm-up, excluded
  jax.block_until_ready(state)
  sized = partition.with_shardings(abstract, state_sh)
  return dict(mesh=dict(mesh.shape), step=compiled, state=state, batch=batch, compile_s=compile_s,
              bytes=partition.per_device_bytes((sized.params, sized.opt_state)),
              loss=float(metrics['loss']), times=[])


def time_block(run: dict, steps: int) -> None:
  """Appends the mean step time of `steps` back-to-back steps to run['times']."""
  state = run['state']
  t = time.perf_counter()
  for _ in range(steps):
    state, _ = run['step'](state, run['batch'])
  jax.block_until_ready(state)
  run['times'].append((time.perf_counter() - t) / steps)
  run['state'] = state


def report(runs: dict, args, per_token: float, peak: float) -> dict:
  """Prints the table and the ratios to dp; {layout: figures}."""
  out = {}
  print(f'{"layout":8s} {"mesh d/f/t":>10s} {"state B/dev":>12s} {"compile s":>9s} {"step ms":>9s} '
        f'{"ex/s":>9s} {"tok/s":>10s} {"MFU":>7s}')
  for lay, run in runs.items():
    step_s = statistics.median(run['times'])
    tok = args.batch * args.seq / step_s
    out[lay] = dict(bytes=run['bytes'], compile_s=run['compile_s'], step_s=step_s,
                    examples_per_s=args.batch / step_s, tokens_per_s=tok,
                    mfu=per_token * tok / peak, loss=run['loss'])
    m = '/'.join(str(run['mesh'][a]) for a in sharding.AXES)
    print(f'{lay:8s} {m:>10s} {run["bytes"]:12,d} {run["compile_s"]:9.2f} {step_s * 1e3:9.2f} '
          f'{args.batch / step_s:9.1f} {tok:10.1f} {out[lay]["mfu"]:7.2%}')
  for lay in [k for k in out if k != 'dp' and 'dp' in out]:
    print(f'{lay}/dp: throughput {out[lay]["tokens_per_s"] / out["dp"]["tokens_per_s"]:.2f}x, '
          f'state per device {out[lay]["bytes"] / out["dp"]["bytes"]:.2f}x')
  return out


def main(argv=None) -> dict:
  """Runs the benchmark, prints the table and returns {layout: figures, '_': run-level figures}."""
  args = parse(argv)
  cores = os.cpu_count() or 1
  load0 = os.getloadavg()
  if args.fake_devices and jax.device_count() != args.fake_devices:
    raise SystemExit(f'--fake_devices {args.fake_devices} but JAX already started with '
                     f'{jax.device_count()} devices; run the script directly')
  devices = jax.devices()
  family, size = args.model.split(':')
  arch = {k: float(v) if '.' in v else int(v)
          for k, v in (kv.split('=') for kv in args.arch.split(',') if kv)}
  module = registry.build('models', dict(name=family, size=size, dtype=args.dtype, **arch),
                          num_classes=2)
  host_batch = _batch(args.batch, args.seq, module.backbone.config.vocab_size)
  peak, peak_src = peak_flops(devices, args.dtype, args.peak_tflops)
  print(f'{len(devices)} x {devices[0].device_kind} ({devices[0].platform}); {args.model} '
        f'{args.dtype} (params {args.param_dtype}), batch {args.batch} x seq {args.seq}; '
        f'{args.repeats} blocks x {args.steps} steps; fsdp min_bytes {args.min_bytes}; '
        f'load {load0[0]:.2f} on {cores} cores')
  print(f'peak {peak / 1e12:.3f} TFLOP/s over {len(devices)} devices ({peak_src})')
  if len(devices) == 1:
    print('one device: dp and fsdp are the same single-device step (its MFU); fsdp+tp needs >= 2')
  runs = {}
  for lay in args.layouts.split(','):
    try:
      runs[lay] = build(lay, module, host_batch, args, len(devices))
    except UserError as e:  # e.g. fsdp+tp on one device, or a batch the mesh does not divide
      print(f'{lay}: skipped ({e})')
  if not runs:
    raise SystemExit('no layout could be built on these devices; see the lines above')
  n, per_token = model_flops_per_token(module, runs[next(iter(runs))]['state'].params, args.seq)
  print(f'non-embedding params {n:,}; model FLOPs/token {per_token:.4g} (6N + 12LTA)')
  for _ in range(args.repeats):  # alternating blocks
    for run in runs.values():
      time_block(run, args.steps)
  out = report(runs, args, per_token, peak)
  load1 = os.getloadavg()
  loaded = max(load0[0], load1[0]) > cores
  print(f'load average start {load0[0]:.2f} end {load1[0]:.2f} on {cores} cores'
        + ('  LOADED: figures are unreliable' if loaded else ''))
  out['_'] = dict(peak_flops=peak, flops_per_token=per_token, params=n, load=(load0, load1),
                  loaded=loaded)
  return out


if __name__ == '__main__':
  main()
