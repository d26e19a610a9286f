"""Examples/s of each model family: frozen-feature forward and a full train step.

  python benchmarks/models_throughput.py [--models bert:minilm-l6,gpt2:small,llama:qwen2-tiny]
      [--batch 32] [--seq 64] [--repeats 5] [--dtype float32] [--remat]

For every `family:size`, on random token ids (images for resnet) at batch B and sequence T:
  features:   the jitted `features` forward used by w2s.models.features (frozen backbone);
  train step: one jitted step (forward, backward, Adam) of the classifier with xent on hard labels.
Prints the median over the repeats (after one compile-and-warm-up call) in examples/s, with the
parameter count; what decides whether a config fits the time budget on the machine at hand.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from w2s import registry  # noqa: E402
from w2s.models import hf_import  # noqa: E402


def _batch(name, batch, seq, vocab):
  rs = np.random.RandomState(0)
  if name == 'resnet':
    return {'x': rs.rand(batch, 32, 32, 3).astype(np.float32)}
  return {'input_ids': rs.randint(0, vocab, (batch, seq)).astype(np.int32),
          'attention_mask': np.ones((batch, seq), np.int32)}


def _median_rate(fn, args, n, repeats):
  jax.block_until_ready(fn(*args))  # compile + warm-up
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return n / statistics.median(times)


def measure(spec, *, batch, seq, repeats):
  model = registry.build('models', spec, num_classes=2)
  vocab = getattr(getattr(getattr(model, 'backbone', None), 'config', None), 'vocab_size', 0)
  data = _batch(spec['name'], batch, seq, vocab)
  params = hf_import.init_params(model, jax.random.key(0), data)
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  feats = jax.jit(lambda p, b: model.apply({'params': p}, b, method='features'))
  tx = optax.adam(1e-4)
  labels = np.arange(batch) % 2

  @jax.jit
  def step(params, opt_state, b, rng):
    def loss(p):
      logits = model.apply({'params': p}, b, train=True, rngs={'dropout': rng})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  f_rate = _median_rate(feats, (params, data), batch, repeats)
  t_rate = _median_rate(step, (params, opt_state, data, jax.random.key(1)), batch, repeats)
  return n_params, f_rate, t_rate


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--models', default='bert:tiny,bert:minilm-l6,gpt2:tiny,llama:tiny,'
                                      'llama:qwen2-tiny,resnet:resnet20')
  ap.add_argument('--batch', type=int, default=32)
  ap.add_argument('--seq', type=int, default=64)
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--dtype', default='float32')
  ap.add_argument('--remat', action='store_true')
  args = ap.parse_args()
  print(f'{jax.devices()[0].platform} x{jax.device_count()}, batch {args.batch}, seq {args.seq}, '
        f'dtype {args.dtype}, remat {args.remat}')
  print(f'{"model":24s} {"params":>12s} {"features ex/s":>14s} {"train ex/s":>12s}')
  for item in args.models.split(','):
    name, size = item.split(':')
    spec = dict(name=name, size=size, dtype=args.dtype, remat=args.remat)
    n, f_rate, t_rate = measure(spec, batch=args.batch, seq=args.seq, repeats=args.repeats)
    print(f'{item:24s} {n:12,d} {f_rate:14.1f} {t_rate:12.1f}', flush=True)


if __name__ == '__main__':
  main()
