"""Examples/s of the online SSL step (w2s/ssl_step.py) against the plain supervised step.

    python benchmarks/ssl_step.py [--algos supervised,ssl:supervised,fixmatch,mean_teacher,...]
        [--batch 32] [--mu 7] [--steps 5] [--blocks 5] [--aug_repeats 10]

About 1.5 minutes on a 2-core CPU with the defaults; `--algos supervised,fixmatch --steps 2
--blocks 3` takes half a minute.

On MNIST-5k with 40 labels and the model, optimizer and FixMatch views of configs/ssl.py
(cnn:small, Adam, weak a = translate 2 px, strong A = a + RandAugment + cutout, EMA 0.99), each
step is built as `train.fit` builds it: `ssl_step.make_step` (or `train.train_step` for
`supervised`, the plain step: labelled batch only, no views) jitted with the fit's shardings and
donation, on the same labelled batch of B rows (plus an unlabelled one of mu B for the SSL step).
`ssl:supervised` is the labelled-only baseline *through the SSL step*: the views and the
weak-view forward for the logged pseudo-label accuracy, but no unlabelled loss, so no A(x_u)
forward (XLA drops it).

Printed per step: compile seconds; the median step time over `--blocks` blocks of `--steps`
steps, alternating between the steps so machine noise hits all alike (after a warm-up call);
labelled examples/s (B / step); views/s, the rows the student sees per second (B + 2 mu B for
an SSL algorithm: a(x_l), a(x_u), A(x_u); B + mu B for ssl:supervised; Mean Teacher's teacher
forward on a(x_u) comes on top); time and XLA's FLOP count relative to the plain step. Then
each view alone, jitted, on the same batches, against the FixMatch step: what the on-device
augmentation costs. And the load average at the start and end (LOADED when it exceeds the
cores: the figures are then unreliable).
"""
import argparse
import dataclasses
import functools
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from w2s.configs import ssl as ssl_config  # noqa: E402
from w2s import options, partition, sharding, ssl_step, train  # noqa: E402
from w2s.data import pipeline  # noqa: E402
from w2s.data import splits as splits_lib  # noqa: E402
from w2s.protocols import learners, semi_supervised  # noqa: E402
from benchmarks.augment import timed  # noqa: E402  (compile s, median ms)
from benchmarks.sharding_throughput import time_block  # noqa: E402

PLAIN = 'supervised'  # the plain supervised step; any other name is an algorithm of w2s/ssl/


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--algos', default='supervised,ssl:supervised,fixmatch,mean_teacher,uda,'
                                     'flexmatch',
                  help="comma-separated: 'supervised' (the plain step), 'ssl:supervised' and "
                       'any algorithm of w2s/ssl/ (uda, flexmatch, ...)')
  ap.add_argument('--batch', type=int, default=32, help='B, labelled rows per step')
  ap.add_argument('--mu', type=int, default=7, help='unlabelled rows per labelled row')
  ap.add_argument('--labels', type=int, default=40)
  ap.add_argument('--steps', type=int, default=5, help='steps per timed block')
  ap.add_argument('--blocks', type=int, default=5, help='timed blocks per step (median)')
  ap.add_argument('--aug_repeats', type=int, default=10, help='timed calls per view (median)')
  return ap.parse_args(argv)


def load_data(args):
  """(resolved protocol options, the stage's TrainOptions, module, labelled examples,
  unlabelled examples) of configs/ssl.py at batch B and ratio mu, featurized as the protocol
  does (seed 0's split)."""
  config = ssl_config.get_config(f'labels={args.labels}')
  config.model.train.batch_size = args.batch
  config.model.train.unlabelled_ratio = args.mu
  r, dataset = semi_supervised.check(config)
  with tempfile.TemporaryDirectory() as d:
    learner = learners.make(r['role'], dataset=dataset, eval_batch_size=r['eval_batch_size'],
                            cache_dir=d)
  parts = splits_lib.labelled_unlabelled(dataset, seed=0, **options.plain(config.labels)).splits
  C = dataset.num_classes
  lab, unl = (learner.examples(parts[k], learners.soft_labels(parts[k], C))
              for k in ('labelled', 'unlabelled'))
  base = learners.train_options(r['role'].train, 'model.train', loss=r['role'].loss, seed=0,
                                run=r['run'])
  return r, base, learner.module, lab, unl


def step_options(base, name: str):
  if name == PLAIN:  # what a supervised stage trains with: no ssl, no views, no EMA
    return dataclasses.replace(base, ssl=None, weak_augment=None, strong_augment=None,
                               ema_decay=0.0)
  algo = name.split(':', 1)[-1]
  return dataclasses.replace(base, ssl=options.plugin('ssl', dict(name=algo), 'model.train.ssl'))


def build(name: str, base, module, lab: dict, unl: dict, mesh) -> dict:
  """The jitted step of `name` as `train.fit` makes it, its state, batch and compile time."""
  opts = step_options(base, name)
  semi = opts.ssl is not None
  steps = train.total_steps(opts, pipeline.num_rows(lab))
  sample = pipeline.sample_rows(lab, 1)
  sample['mask'] = np.ones(1, np.float32)
  tx, schedule = train._make_tx(opts, steps, module, sample)  # pylint: disable=protected-access
  apply_fn = train.train_apply_fn(module, opts)
  u = ssl_step.unlabelled_examples(unl)

  def init_fn(rng):  # fit's init_fn, without pretrained weights
    p_rng, d_rng, s_rng = jax.random.split(rng, 3)
    params = module.init({'params': p_rng, 'dropout': d_rng}, sample, train=False)['params']
    extra = (ssl_step.init_extra(opts, params, sample['label'].shape[-1], pipeline.num_rows(u))
             if semi else {})
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            opt_state=tx.init(params), rng=s_rng, extra=extra)

  rng = jax.random.PRNGKey(0)
  state_sh = partition.shardings(jax.eval_shape(init_fn, rng), mesh, opts.partition, None)
  state = jax.jit(init_fn, out_shardings=state_sh)(rng)
  if semi:
    step = ssl_step.make_step(opts, apply_fn=apply_fn, tx=tx, schedule=schedule,
                              total_steps=steps)
  else:
    step = functools.partial(train.train_step, apply_fn=apply_fn, tx=tx, schedule=schedule,
                             total_steps=steps, accum_steps=opts.accum_steps,
                             loss_fn=functools.partial(opts.loss.entry(), **opts.loss.hparams))
  step_fn = jax.jit(step, in_shardings=(state_sh, sharding.data_sharded(mesh)),
                    out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
  # the SSL step's first global batch; the plain step gets its labelled half (the same rows)
  batch = next(ssl_step.batches(lab, u, step_options(base, 'fixmatch'), mesh, 0, 1))
  if not semi:
    batch = batch['x']
  t = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  state, _ = compiled(state, batch)  # warm-up, excluded
  jax.block_until_ready(state)
  # rows the student sees: ssl:supervised ignores A(x_u), and XLA drops that forward
  views = 0 if not semi else (1 if opts.ssl.name == 'supervised' else 2)
  rows = opts.batch_size * (1 + views * opts.unlabelled_ratio)
  return dict(step=compiled, state=state, batch=batch, compile_s=compile_s, times=[],
              flops=float((cost or {}).get('flops', float('nan'))), rows=rows, opts=opts)


def report_steps(runs: dict, batch: int) -> dict:
  out = {}
  ref = runs.get(PLAIN)
  print(f'{"step":16s} {"compile s":>9s} {"step ms":>9s} {"labelled ex/s":>13s} '
        f'{"views/s":>9s} {"x time":>7s} {"x FLOPs":>8s}')
  for name, run in runs.items():
    s = statistics.median(run['times'])
    t_ratio = s / statistics.median(ref['times']) if ref else float('nan')
    f_ratio = run['flops'] / ref['flops'] if ref and ref['flops'] > 0 else float('nan')
    out[name] = dict(compile_s=run['compile_s'], step_s=s, labelled_per_s=batch / s,
                     views_per_s=run['rows'] / s, time_ratio=t_ratio, flops=run['flops'],
                     flops_ratio=f_ratio)
    print(f'{name:16s} {run["compile_s"]:9.2f} {1e3 * s:9.2f} {batch / s:13.1f} '
          f'{run["rows"] / s:9.1f} {t_ratio:7.2f} {f_ratio:8.2f}', flush=True)
  return out


def report_views(name: str, run: dict, base, repeats: int) -> dict:
  """Each view of the SSL step alone (jitted, built as make_step builds it) on the run's batches."""
  step_s = statistics.median(run['times'])
  weak = options.build(base.weak_augment, 'model.train.weak_augment')
  strong = options.build(base.strong_augment, 'model.train.strong_augment')
  x, u = run['batch']['x'], run['batch']['u']
  views = {f'a(x_l) [{x["mask"].shape[0]}]': (weak, x),
           f'a(x_u) [{u["mask"].shape[0]}]': (weak, u),
           f'A(x_u) [{u["mask"].shape[0]}]': (strong, u)}
  print(f'\nviews alone vs the {name} step ({1e3 * step_s:.2f} ms):')
  print(f'  {"view":18s} {"ms/batch":>9s} {"x step":>7s} {"compile s":>10s}')
  out, total = {}, 0.0
  for i, (name, (fn, b)) in enumerate(views.items()):
    first, ms = timed(jax.jit(fn), jax.random.key(i), b, repeats=repeats)
    s = ms / 1e3
    out[name] = dict(compile_s=first, s=s, step_fraction=s / step_s)
    total += s
    print(f'  {name:18s} {1e3 * s:9.3f} {s / step_s:7.1%} {first:10.2f}')
  print(f'  {"all three":18s} {1e3 * total:9.3f} {total / step_s:7.1%}')
  out['all'] = dict(s=total, step_fraction=total / step_s)
  return out


def main(argv=None) -> dict:
  """Runs the benchmark, prints the tables; {'steps': {name: figures}, 'views': ..., '_': ...}."""
  args = parse(argv)
  cores = os.cpu_count() or 1
  load0 = os.getloadavg()
  names = [n for n in args.algos.split(',') if n]
  r, base, module, lab, unl = load_data(args)
  mesh = r['mesh']
  dev = jax.devices()[0]
  print(f'{jax.device_count()} x {dev.device_kind} ({dev.platform}); MNIST-5k, '
        f'{pipeline.num_rows(lab)} labels, {pipeline.num_rows(unl)} unlabelled; cnn:small, '
        f'B={args.batch}, mu={args.mu}; {args.blocks} blocks x {args.steps} steps; '
        f'load {load0[0]:.2f} on {cores} cores', flush=True)
  runs = {n: build(n, base, module, lab, unl, mesh) for n in names}
  for _ in range(args.blocks):  # alternating blocks
    for run in runs.values():
      time_block(run, args.steps)
  out = {'steps': report_steps(runs, args.batch)}
  semi = [n for n, run in runs.items() if run['opts'].ssl is not None]
  if semi:  # the views of FixMatch's step (or of the first SSL step run)
    name = 'fixmatch' if 'fixmatch' in semi else semi[0]
    out['views'] = report_views(name, runs[name], base, args.aug_repeats)
  load1 = os.getloadavg()
  loaded = max(load0[0], load1[0]) > cores
  print(f'load average start {load0[0]:.2f} end {load1[0]:.2f} on {cores} cores'
        + ('  LOADED: figures are unreliable' if loaded else ''))
  out['_'] = dict(load=(load0, load1), loaded=loaded, batch=args.batch, mu=args.mu)
  return out


if __name__ == '__main__':
  main()
