"""Train-step throughput and test accuracy of image models on mnist_5k after a short fixed run.

  python benchmarks/image_models.py [--models resnet:tiny,cnn:small] [--steps 120] [--batch 64]
      [--lr 1e-3] [--workdir /tmp/w2s_image_bench]

Each `family:size` runs the supervised protocol (`configs/supervised.py:dataset=mnist_5k`, Adam,
warmup + cosine) for `--steps` steps on the devices at hand, from a fresh workdir. Prints the
steady-state examples/s (median of the logged rates after the first, which includes compilation),
the wall time of the whole run and the test accuracy: what tells whether a family is usable as a
weak or strong model on a CPU.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import supervised  # noqa: E402
from w2s import train  # noqa: E402


def measure(name, size, *, steps, batch, lr, workdir):
  config = supervised.get_config(f'dataset=mnist_5k,model={name}')
  config.model = dict(name=name, size=size)
  config.optimizer.learning_rate = lr
  config.batch_size, config.num_epochs, config.num_steps = batch, 0.0, steps
  config.log_every, config.checkpoint_every = 10, 10 * steps
  shutil.rmtree(workdir, ignore_errors=True)
  t = time.perf_counter()
  results = train.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - t
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rates = [r['examples_per_sec'] for r in map(json.loads, f) if 'examples_per_sec' in r]
  return statistics.median(rates[1:] or rates), wall, results['accuracy']


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--models', default='resnet:tiny,cnn:small')
  p.add_argument('--steps', type=int, default=120)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--lr', type=float, default=1e-3)
  p.add_argument('--workdir', default='/tmp/w2s_image_bench')
  a = p.parse_args()
  rows = []
  for item in a.models.split(','):
    name, _, size = item.partition(':')
    rate, wall, acc = measure(name, size, steps=a.steps, batch=a.batch, lr=a.lr,
                              workdir=os.path.join(a.workdir, item.replace(':', '_')))
    rows.append(f'{item:16s} {rate:10.1f} ex/s  {wall:7.1f} s  accuracy {acc:.4f}')
  print(f'mnist_5k, {a.steps} steps x batch {a.batch}, lr {a.lr}')
  print('\n'.join(rows))


if __name__ == '__main__':
  main()
