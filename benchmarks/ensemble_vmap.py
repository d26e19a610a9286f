"""Wall time of K weak supervisors: one vmapped ensemble step vs K separate runs.

    python benchmarks/ensemble_vmap.py [--members 8] [--steps 200] [--repeats 3] [--hidden 256]
        [--blocks 5] [--smoke]

1. End to end, as the protocol runs them: K small MLPs on mnist_5k (784-hidden-10, batch 64)
   trained both ways (compile, training, final checkpoint); the median wall time of each and
   their ratio. With the persistent compilation cache off (a fresh process's first run): K
   separate `fit`s compile K times, the ensemble once, which is most of this ratio for few steps.
2. Steady state, compilation excluded and reported on its own: the jitted vmapped step (K
   members, [K, 64] rows) against K calls of the jitted single step, on fixed batches, in
   alternating timed blocks of --steps // 10 steps; the median per-step time of each, the
   per-step speed-up, and each side's compile seconds. On a CPU a small model's single step
   already fills the cores, so the per-step speed-up is small (vmapping pays on accelerators,
   where one small step leaves most of the chip idle); the line says so when it is below 1.2x.
"""
import argparse
import os
import statistics
import tempfile
import time

import functools

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from w2s import ensemble, options, registry, sharding, train
from w2s.data import featurize, pipeline


def steady_state(module, ex, args, seeds, cfg) -> dict:
  """Per-step time of the vmapped step vs K single steps on fixed batches (compiles excluded)."""
  opts = options.TrainOptions.coerce(cfg(0))
  steps = args.steps
  tx, schedule = train._make_tx(opts, steps, module, train._sample_rows(ex))
  loss_fn = registry.get('losses', 'xent')
  step = functools.partial(train.train_step, apply_fn=train.linen_apply_fn(module),
                           loss_fn=loss_fn, tx=tx, schedule=schedule, total_steps=steps)
  sample = {k: v[:64] for k, v in ex.items() if k != 'id'}
  sample['mask'] = np.ones(64, np.float32)

  def init(seed):
    params = module.init({'params': jax.random.PRNGKey(seed)}, sample, train=False)['params']
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=tx.init(params), rng=jax.random.PRNGKey(seed))

  k = len(seeds)
  single = [init(s) for s in seeds]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *single)
  batch = jax.device_put(sample)
  kbatch = jax.device_put(jax.tree.map(lambda a: np.stack([a] * k), sample))
  t = time.perf_counter()
  one = jax.jit(step, donate_argnums=0).lower(single[0], batch).compile()
  compile_one = time.perf_counter() - t
  t = time.perf_counter()
  many = jax.jit(jax.vmap(step), donate_argnums=0).lower(stacked, kbatch).compile()
  compile_many = time.perf_counter() - t
  per_block = max(1, steps // 10)
  rates = {'separate': [], 'vmapped': []}
  state = {'separate': single, 'vmapped': stacked}

  def run_separate():
    for _ in range(per_block):
      for i in range(k):
        state['separate'][i], _ = one(state['separate'][i], batch)
    jax.block_until_ready(state['separate'])

  def run_vmapped():
    for _ in range(per_block):
      state['vmapped'], _ = many(state['vmapped'], kbatch)
    jax.block_until_ready(state['vmapped'])

  run_separate()
  run_vmapped()  # warm-up
  for _ in range(args.blocks):
    for name, fn in (('separate', run_separate), ('vmapped', run_vmapped)):
      t = time.perf_counter()
      fn()
      rates[name].append((time.perf_counter() - t) / per_block)
  med = {n: statistics.median(v) for n, v in rates.items()}
  return {'step_s': med, 'speedup': med['separate'] / med['vmapped'],
          'compile_s': {'separate (one compile, reused by all K)': compile_one,
                        'vmapped': compile_many}}


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument('--members', type=int, default=8)
  ap.add_argument('--steps', type=int, default=200)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--hidden', type=int, default=256)
  ap.add_argument('--blocks', type=int, default=5)
  ap.add_argument('--smoke', action='store_true', help='2 members, 20 steps, 1 repeat')
  args = ap.parse_args(argv)
  if args.smoke:
    args.members, args.steps, args.repeats, args.blocks = 2, 20, 1, 2
  ds = registry.build('datasets', dict(name='mnist_5k'))
  ex = pipeline.one_hot_labels(featurize.featurize(ds, ds.split('train')), ds.num_classes)
  module = registry.build('models', dict(name='mlp', hidden=(args.hidden,)),
                          num_classes=ds.num_classes)
  mesh = sharding.make_mesh()
  seeds = ensemble.member_seeds(0, args.members)

  def cfg(seed):
    return ConfigDict(dict(seed=seed, loss=dict(name='xent'),
                           optimizer=dict(name='adam', learning_rate=1e-3),
                           schedule=dict(name='constant'), batch_size=64, num_epochs=0.0,
                           num_steps=args.steps, accum_steps=1, log_every=args.steps,
                           checkpoint_every=10 ** 9, keep_checkpoints=1))

  def separate():
    with tempfile.TemporaryDirectory() as d:
      for k, s in enumerate(seeds):
        state, _ = train.fit(module, ex, cfg=cfg(s), workdir=os.path.join(d, str(k)), mesh=mesh)
        jax.block_until_ready(state.params)

  def vmapped():
    with tempfile.TemporaryDirectory() as d:
      state, _ = ensemble.fit_ensemble(module, ex, cfg=cfg(0), seeds=seeds, workdir=d, mesh=mesh)
      jax.block_until_ready(state.params)

  times = {'separate': [], 'vmapped': []}
  for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
    for name, fn in (('separate', separate), ('vmapped', vmapped)):
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  med = {k: statistics.median(v) for k, v in times.items()}
  print(f'devices: {jax.device_count()} x {jax.devices()[0].platform}; K={args.members} members, '
        f'{args.steps} steps of batch 64 each, {args.repeats} repeats')
  for k, v in times.items():
    print(f'  {k:9s} median {med[k]:7.2f} s   (runs: {", ".join(f"{x:.2f}" for x in v)})')
  print(f'  speed-up of the vmapped ensemble: {med["separate"] / med["vmapped"]:.1f}x')
  ss = steady_state(module, ex, args, seeds, cfg)
  print(f'steady state (fixed batches, compiles excluded), per step of all K members:')
  for name, v in ss['step_s'].items():
    print(f'  {name:9s} median {1e3 * v:8.2f} ms')
  note = ('' if ss['speedup'] >= 1.2 else
          '  (small: on this backend one member\'s step already fills the cores; the end-to-end '
          'gain above is mostly compiling once instead of K times)')
  print(f'  per-step speed-up {ss["speedup"]:.2f}x{note}')
  print('  compile: ' + ', '.join(f'{n} {v:.2f} s' for n, v in ss['compile_s'].items()))
  load = os.getloadavg()[0]
  print(f'load average {load:.2f} on {os.cpu_count()} cores'
        + ('  LOADED: figures are unreliable' if load > (os.cpu_count() or 1) + 0.5 else ''))
  return {'end_to_end_s': med, 'end_to_end_speedup': med['separate'] / med['vmapped'], **ss}


if __name__ == '__main__':
  main()
