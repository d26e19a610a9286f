"""Per-device memory plan of the generative weak-to-strong students, from abstract shapes only.

    python benchmarks/memory_plan_7b.py                  # the tables (~40 s, 8 fake CPU devices)
    python benchmarks/memory_plan_7b.py --batch 32 --seq 512 --json /tmp/plan.json
    python benchmarks/memory_plan_7b.py --plans 7b-lora-fsdp8 --compile   # + XLA's own analysis

No weights and no accelerator: every figure comes from `jax.eval_shape` / `jax.make_jaxpr` of what
`w2s.train.fit` builds for `configs/w2s_sft.py`'s accelerator arguments (Hugging Face decoders,
`lora=R`): the Qwen2.5-7B strong student (llama family, preset 'qwen2-7b': hidden 3584, 28 layers,
28 heads, 4 kv heads, intermediate 18944, vocab 152064, untied LM head) and the Qwen2.5-0.5B weak
model, next-token SFT (`w2s.losses.sft`) through `w2s.models.sequence.lm_apply_fn`, AdamW from
fit's own `train._make_tx` (LoRA: Adam on the adapters only; param_dtype='bfloat16': float32 master
weights and moments), FSDP from `w2s.partition` over a `w2s.sharding.make_mesh` 'fsdp' axis.

PLANS (B = --batch global rows of T = --seq tokens; b = B / (devices x accum) rows per microbatch):
  7b-lora-fsdp8   LoRA r=16 on attention + MLP, bf16 weights and compute, remat, FSDP over 8
  7b-full-fsdp8   the same, every weight trained (the case LoRA is weighed against)
  7b-lora-1dev    LoRA on one device, accum_steps 8 (b = B / 8)
  7b-full-1dev    full fine-tune on one device, accum_steps 8
  0.5b-full-1dev  the weak Qwen2.5-0.5B as configs/w2s_sft.py builds it: float32, no remat, 1 device
  0.5b-bf16-remat the same in bf16 with remat (what fits)

Rows, per device (and x devices for all of them together):
  params frozen / trainable, optimizer state  exact: the abstract TrainState's leaves under the
      plan's shardings (`partition.per_device_bytes`); trainable = `trainable_mask` (LoRA adapters
      and the 1-unit classification head; every leaf without LoRA).
  gradients     float32, one per parameter: `steps.train_step` differentiates every param (and its
      grad_norm reads them all), so a LoRA step also forms the frozen weights' gradients; an upper
      bound, sharded like the params ('grads_trainable' in the JSON: the adapters' alone).
  activations   the forward values JAX saves for the backward: the VJP's residuals that are not
      parameters, measured exactly on 1- and 2-layer copies at b = 1 and 2 and extrapolated
      (residuals are linear in layers and rows), plus the backward's working set: one block
      recomputed under remat (its residuals without remat) and, under FSDP, the largest gathered
      tensor (the LM head / embedding) unsharded with its float32 gradient before reduce-scatter.
  logits        [b, T, V] float32: the residual the softmax backward keeps, and its gradient.
XLA schedules and fuses further, so this is a plan, not a measurement: `--compile` adds XLA's
`memory_analysis` of the real jitted step (`w2s.memory.plan`). The script runs on the CPU unless
JAX_PLATFORMS says otherwise: `JAX_PLATFORMS=cuda ... --compile` on a host with the plan's devices
gives XLA:gpu's figure; XLA:CPU's (bf16 matmuls in float32, remat barely lowering its temporaries)
is far above this plan, see experiments/generative/accelerators.md.
"""
import argparse
import functools
import json
import os
import sys
import tempfile
import time

if __name__ == '__main__':
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8').strip()
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from w2s import memory, optim, options, partition, sharding, steps, train  # noqa: E402
from w2s.errors import UserError  # noqa: E402
from w2s.losses import sft  # noqa: E402
from w2s.models import llama, lora as lora_lib, sequence  # noqa: E402

GiB = 1 << 30
H100_BYTES = 80 * GiB
# published totals (Qwen2.5 model cards): 7.61B and 0.49B parameters
PUBLISHED = {'qwen2-7b': (7.62e9, 0.01), 'qwen2-0.5b': (0.49e9, 0.02)}
_7B = dict(size='qwen2-7b', dtype='bfloat16', param_dtype='bfloat16', remat=True)
_05B = dict(size='qwen2-0.5b', lora=0, devices=1, accum=1)
PLANS = {
    '7b-lora-fsdp8': dict(_7B, lora=16, devices=8, accum=1),
    '7b-full-fsdp8': dict(_7B, lora=0, devices=8, accum=1),
    '7b-lora-1dev': dict(_7B, lora=16, devices=1, accum=8),
    '7b-full-1dev': dict(_7B, lora=0, devices=1, accum=8),
    '0.5b-full-1dev': dict(_05B, dtype='float32', param_dtype='float32', remat=False),
    '0.5b-bf16-remat': dict(_05B, dtype='bfloat16', param_dtype='bfloat16', remat=True),
}
ROWS = ('params_frozen', 'params_trainable', 'opt_state', 'grads', 'activations', 'logits',
        'total')


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  ap.add_argument('--plans', default=','.join(PLANS), help='comma-separated subset of PLANS')
  ap.add_argument('--batch', type=int, default=32, help='global batch B (configs/w2s_sft.py: 32)')
  ap.add_argument('--seq', type=int, default=512, help='tokens T (configs/w2s_sft.py: 512)')
  ap.add_argument('--lora', type=int, default=16, help='LoRA rank of the LoRA plans')
  ap.add_argument('--compile', action='store_true',
                  help="also lower + compile the real step: XLA's memory analysis (minutes)")
  ap.add_argument('--json', default='', help='write every figure to this JSON file')
  args = ap.parse_args(argv)
  unknown = sorted(set(args.plans.split(',')) - set(PLANS))
  if unknown:
    ap.error(f'--plans has {unknown[0]!r}; choose from {",".join(PLANS)}')
  return args


def make_model(spec: dict, num_layers: int | None = None, remat: bool | None = None):
  """The strong / weak decoder of configs/w2s_sft.py's accelerator arguments, random-init shapes."""
  arch = {} if num_layers is None else {'num_layers': num_layers}
  rank = spec['lora']
  return llama.create(num_classes=1, size=spec['size'], lm_head=True, dtype=spec['dtype'],
                      remat=spec['remat'] if remat is None else remat,
                      lora=dict(rank=rank, alpha=2 * rank) if rank else None, **arch)


def _opts(spec: dict, batch: int, partition_rules: str) -> options.TrainOptions:
  return options.TrainOptions.coerce(dict(
      loss=dict(name='sft'), optimizer=dict(name='adamw', learning_rate=1e-4, weight_decay=0.0),
      batch_size=batch, num_steps=1000, accum_steps=spec['accum'],
      param_dtype=spec['param_dtype'], partition=partition_rules))


def _sample(seq: int) -> dict:
  return {'input_ids': np.zeros((1, seq), np.int32), 'attention_mask': np.ones((1, seq), np.int32)}


def abstract_state(module, spec: dict, opts, seq: int):
  """(abstract TrainState, optimizer, schedule) as `fit` initialises it (pretrained=None branch)."""
  sample = _sample(seq)
  tx, schedule = train._make_tx(opts, opts.num_steps, module, sample)  # private: fit's optimizer

  def init_fn(rng):
    params = module.init({'params': rng, 'dropout': rng}, sample, train=False)['params']
    params = optim.cast_params(params, spec['param_dtype'])
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=tx.init(params), rng=rng, extra={})
  return jax.eval_shape(init_fn, jax.random.PRNGKey(0)), tx, schedule


def _nbytes(x) -> int:
  return int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize


def param_counts(params) -> dict:
  """Parameters of the checkpoint (backbone + LM head), LoRA adapters, classification head."""
  out = {'checkpoint': 0, 'adapters': 0, 'head': 0}
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    n = int(np.prod(x.shape, dtype=np.int64))
    key = ('adapters' if lora_lib.is_adapter(path) else
           'head' if partition.path_str(path).startswith('head') else 'checkpoint')
    out[key] += n
  return out


def residual_bytes(spec: dict, layers: int, rows: int, seq: int, remat: bool) -> tuple[int, int]:
  """(logits-shaped, other) bytes of the SFT loss's VJP residuals that are not its parameters."""
  module = make_model(spec, num_layers=layers, remat=remat)
  sample = _sample(seq)
  params = jax.eval_shape(lambda: optim.cast_params(
      module.init({'params': jax.random.PRNGKey(0)}, sample, train=False)['params'],
      spec['param_dtype']))
  s = lambda dt, *shape: jax.ShapeDtypeStruct(shape, dt)
  batch = dict(input_ids=s(jnp.int32, rows, seq), attention_mask=s(jnp.int32, rows, seq),
               loss_mask=s(jnp.float32, rows, seq), label=s(jnp.float32, rows, 1),
               mask=s(jnp.float32, rows))
  apply_fn = sequence.lm_apply_fn(module)

  def loss(p, bt):
    per, _ = sft.loss(logits=apply_fn(p, bt, train=True, rng=None), labels=bt['label'],
                      mask=bt['mask'], batch=bt)
    return per.sum()
  closed = jax.make_jaxpr(lambda p, bt: jax.tree.leaves(jax.vjp(lambda q: loss(q, bt), p)[1]))(
      params, batch)
  inputs = {id(v) for v in closed.jaxpr.invars}
  var = type(closed.jaxpr.invars[0])  # a Literal (an inlined constant) is no buffer
  vocab = module.backbone.config.vocab_size
  logits = other = 0
  for v in closed.jaxpr.outvars:
    if id(v) in inputs or not isinstance(v, var) or not v.aval.shape:
      continue  # a parameter passed through (no new memory), a constant or a scalar
    n = _nbytes(v.aval)
    if v.aval.shape[-1] == vocab and len(v.aval.shape) >= 2:
      logits += n
    else:
      other += n
  return logits, other


@functools.lru_cache(maxsize=None)
def residual_model(key: tuple, seq: int, remat: bool) -> dict:
  """Residual bytes as c0 + c1 b + L (w + a b), fitted exactly on L, b in {1, 2}."""
  spec = dict(key, remat=remat)
  r = {(l, b): residual_bytes(spec, l, b, seq, remat) for l in (1, 2) for b in (1, 2)}
  out = {}
  for i, part in enumerate(('logits', 'other')):
    g = {k: v[i] for k, v in r.items()}
    a = g[2, 2] - g[2, 1] - g[1, 2] + g[1, 1]
    w = g[2, 1] - g[1, 1] - a
    c1 = g[1, 2] - g[1, 1] - a
    out[part] = dict(c0=g[1, 1] - c1 - w - a, c1=c1, w=w, a=a)
  return out


def _at(m: dict, layers: int, rows: int) -> int:
  return m['c0'] + m['c1'] * rows + layers * (m['w'] + m['a'] * rows)


def plan(name: str, spec: dict, batch: int, seq: int) -> dict:
  """Every figure of one plan (bytes per device, params counts, settings)."""
  n_dev = spec['devices']
  if len(jax.devices()) < n_dev:
    raise UserError(f'plan {name} needs {n_dev} devices, JAX sees {len(jax.devices())}; run the '
                    'script directly (it asks XLA for 8 CPU devices) or set XLA_FLAGS='
                    f'--xla_force_host_platform_device_count={n_dev}')
  micro = batch // (n_dev * spec['accum'])
  if micro < 1 or batch % (n_dev * spec['accum']):
    raise UserError(f'--batch {batch} is not divisible by devices x accum_steps = '
                    f'{n_dev} x {spec["accum"]} (plan {name})')
  mesh = sharding.make_mesh(n_dev, dict(fsdp=n_dev))
  module = make_model(spec)
  opts = _opts(spec, batch, 'fsdp' if n_dev > 1 else 'replicate')
  abstract, _, _ = abstract_state(module, spec, opts, seq)
  shards = partition.shardings(abstract, mesh, opts.partition)
  sized = partition.with_shardings(abstract, shards)
  mask = module.trainable_mask(abstract.params)
  if mask is None:
    mask = jax.tree.map(lambda _: True, abstract.params)
  pick = lambda want: [x for x, t in zip(jax.tree.leaves(sized.params), jax.tree.leaves(mask))
                       if t == want]
  per = {'params_frozen': partition.per_device_bytes(pick(False)),
         'params_trainable': partition.per_device_bytes(pick(True)),
         'opt_state': partition.per_device_bytes(sized.opt_state)}
  f32 = lambda leaves: [jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding)
                        for x in leaves]
  per['grads'] = partition.per_device_bytes(f32(jax.tree.leaves(sized.params)))
  grads_trainable = partition.per_device_bytes(f32(pick(True)))
  c = module.backbone.config
  key = tuple((k, spec[k]) for k in ('size', 'lora', 'dtype', 'param_dtype'))
  res = residual_model(key, seq, spec['remat'])
  logits_saved = res['logits']['c1'] * micro  # [b, T, V]-shaped: grows with the rows
  # the rest, with any batch-independent [.., V] value (a tied head's transposed table)
  saved = _at(res['other'], c.num_layers, micro) + _at(res['logits'], c.num_layers, micro) \
      - logits_saved
  no_remat = residual_model(key, seq, False)['other']
  recompute = (no_remat['w'] + no_remat['a'] * micro) if spec['remat'] else 0
  # remat not honoured by the compiler (seen on XLA:CPU): every block's values kept
  unremat = _at(no_remat, c.num_layers, micro) - _at(res['other'], c.num_layers, micro)
  biggest = max(jax.tree.leaves(abstract.params), key=_nbytes)
  gathered = (_nbytes(biggest) + 4 * int(np.prod(biggest.shape))) if n_dev > 1 else 0
  per['activations'] = saved + recompute + gathered
  logits_one = micro * seq * c.vocab_size * 4
  per['logits'] = logits_saved + logits_one  # the saved f32 logits + their gradient
  per['total'] = sum(per[k] for k in ROWS[:-1])
  worst = per['total'] - recompute + unremat
  counts = param_counts(abstract.params)
  return dict(plan=name, spec=spec, devices=n_dev, mesh=dict(mesh.shape), batch=batch, seq=seq,
              micro_batch=micro, counts=counts, per_device=per,
              all_devices={k: v * n_dev for k, v in per.items()},
              detail=dict(activations_saved=saved, block_recompute=recompute,
                          fsdp_gathered=gathered, logits_saved=logits_saved,
                          logits_grad=logits_one, grads_trainable=grads_trainable,
                          total_without_remat=worst),
              h100_fraction=per['total'] / H100_BYTES)


def check_counts(result: dict) -> None:
  """The checkpoint's parameter count against the published total (AssertionError if off)."""
  size = result['spec']['size']
  want, tol = PUBLISHED[size]
  got = result['counts']['checkpoint']
  assert abs(got - want) <= tol * want, f'{size}: {got:,} params, published {want:.3g} +- {tol:.0%}'


def compiled(name: str, spec: dict, batch: int, seq: int) -> dict:
  """XLA's memory analysis of the real jitted step on abstract inputs (`w2s.memory.plan`)."""
  n_dev = spec['devices']
  mesh = sharding.make_mesh(n_dev, dict(fsdp=n_dev))
  module = make_model(spec)
  opts = _opts(spec, batch, 'fsdp' if n_dev > 1 else 'replicate')
  abstract, tx, schedule = abstract_state(module, spec, opts, seq)
  shards = partition.shardings(abstract, mesh, opts.partition)
  data, repl = sharding.data_sharded(mesh), sharding.replicated(mesh)
  s = lambda dt, *shape: jax.ShapeDtypeStruct(shape, dt, sharding=data)
  batch_abs = dict(input_ids=s(jnp.int32, batch, seq), attention_mask=s(jnp.int32, batch, seq),
                   loss_mask=s(jnp.float32, batch, seq), label=s(jnp.float32, batch, 1),
                   mask=s(jnp.float32, batch), id=s(jnp.int32, batch))
  step = jax.jit(functools.partial(
      steps.train_step, apply_fn=sequence.lm_apply_fn(module), loss_fn=sft.loss, tx=tx,
      schedule=schedule, total_steps=opts.num_steps, accum_steps=opts.accum_steps),
      in_shardings=(shards, data), out_shardings=(shards, repl), donate_argnums=0)
  t = time.perf_counter()
  out = memory.plan(step, partition.with_shardings(abstract, shards), batch_abs)
  out['compile_s'] = time.perf_counter() - t
  out['backend'] = jax.default_backend()
  return out


def _gib(b: float) -> str:
  return f'{b / GiB:.2f}'


LABELS = {'params_frozen': 'params, frozen', 'params_trainable': 'params, trainable',
          'opt_state': 'optimizer state', 'grads': 'gradients (f32, every param)',
          'activations': 'activations (+ working set)', 'logits': 'logits [b, T, V] f32 x2',
          'total': '**total**'}


def table(r: dict) -> str:
  """One plan as a markdown table: GiB per device and over all devices."""
  s, c, n = r['spec'], r['counts'], r['devices']
  total_params = c['checkpoint'] + c['adapters'] + c['head']
  trainable = (c['adapters'] + c['head']) if s['lora'] else total_params
  lines = [f"**{r['plan']}**: {s['size']}, {'LoRA r=%d' % s['lora'] if s['lora'] else 'full'}, "
           f"{n} device(s) (mesh {r['mesh']}), weights {s['param_dtype']}, compute {s['dtype']}, "
           f"remat {s['remat']}, B={r['batch']} T={r['seq']}, accum {s['accum']} -> "
           f"b={r['micro_batch']} rows per device; {c['checkpoint'] / 1e9:.3f}B checkpoint params, "
           f"{trainable:,} trained ({trainable / total_params:.2%})", '',
           f'| GiB | per device | all {n} device(s) |', '|---|---:|---:|']
  for k in ROWS:
    lines.append(f"| {LABELS[k]} | {_gib(r['per_device'][k])} | {_gib(r['all_devices'][k])} |")
  lines.append(f"| fraction of an 80 GiB H100 | {r['h100_fraction']:.1%} | |")
  if s['remat']:
    worst = r['detail']['total_without_remat']
    lines.append(f'| total if the compiler kept every block (remat not honoured) | {_gib(worst)} '
                 f'({worst / H100_BYTES:.0%}) | {_gib(worst * n)} |')
  if 'compiled' in r:
    x = r['compiled']
    lines.append(f"| XLA:{x['backend']} memory_analysis: args {_gib(x['arguments'])} + temp "
                 f"{_gib(x['temp'])} | {_gib(x['total'])} | |")
  return '\n'.join(lines)


def summary(results: list[dict]) -> str:
  lines = ['| plan | params | trained | GiB / device | of 80 GiB | fits | no-remat worst case |',
           '|---|---:|---:|---:|---:|---|---:|']
  for r in results:
    c = r['counts']
    trained = (c['adapters'] + c['head']) if r['spec']['lora'] else sum(c.values())
    f, worst = r['h100_fraction'], r['detail']['total_without_remat'] / H100_BYTES
    lines.append(f"| {r['plan']} | {c['checkpoint'] / 1e9:.2f}B | {trained / 1e6:,.1f}M | "
                 f"{_gib(r['per_device']['total'])} | {f:.0%} | {'yes' if f < 0.9 else 'NO'} | "
                 f"{worst:.0%} |")
  return '\n'.join(lines)


def write_json(path: str, obj) -> None:
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, suffix='.tmp')
  with os.fdopen(fd, 'w') as f:
    json.dump(obj, f, indent=1, default=str)
  os.replace(tmp, path)


def main(argv=None) -> list[dict]:
  args = parse(argv)
  results = []
  for name in args.plans.split(','):
    spec = dict(PLANS[name])
    if spec['lora']:
      spec['lora'] = args.lora
    r = plan(name, spec, args.batch, args.seq)
    check_counts(r)
    if args.compile:
      r['compiled'] = compiled(name, spec, args.batch, args.seq)
    results.append(r)
    print(table(r) + '\n', flush=True)
  print(summary(results))
  print('\nFits: < 90% of 80 GiB (headroom for XLA\'s own buffers; JAX preallocates 75% of a '
        'GPU unless XLA_PYTHON_CLIENT_MEM_FRACTION is raised).')
  if args.json:
    write_json(args.json, results)
  return results


if __name__ == '__main__':
  main()
