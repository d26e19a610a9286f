"""Wall time of K weak supervisors: one vmapped ensemble step vs K separate runs.

    python benchmarks/ensemble_vmap.py [--members 8] [--steps 200] [--repeats 3]

Trains K small MLPs on mnist_5k (784-256-10, batch 64) both ways, end to end as the protocol does
(compile, training, final checkpoint), and prints the median wall time of each and their ratio.
"""
import argparse
import os
import statistics
import tempfile
import time

import jax
from ml_collections import ConfigDict

from w2s import ensemble, registry, sharding, train
from w2s.data import featurize, pipeline


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--members', type=int, default=8)
  ap.add_argument('--steps', type=int, default=200)
  ap.add_argument('--repeats', type=int, default=3)
  args = ap.parse_args()
  ds = registry.build('datasets', dict(name='mnist_5k'))
  ex = pipeline.one_hot_labels(featurize.featurize(ds, ds.split('train')), ds.num_classes)
  module = registry.build('models', dict(name='mlp', hidden=(256,)), num_classes=ds.num_classes)
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


if __name__ == '__main__':
  main()
