"""Per-batch time of each augmentation, jitted, next to a small CNN's train step on the same batch.

    python benchmarks/augment.py [--batch 64] [--repeats 50] [--text_len 128]

For [B, 28, 28, 1] (MNIST) and [B, 32, 32, 3] (CIFAR) image batches: the median wall time of one
call of each `w2s.augment` plug-in (jitted, after a warm-up call that compiles it), its compile
time, and its ratio to one jitted `w2s.train.train_step` of cnn:small (xent, Adam) on the same
batch: what an augmentation inside the step adds to it. Token augmentations run on a [B, T] text
batch and are reported in ms only. Runs on whatever devices are at hand, one device.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from w2s import registry, train  # noqa: E402

IMAGE_AUGS = {
    'flip': dict(name='flip'),
    'translate pad=4': dict(name='translate', pad=4),
    'cutout 0.5': dict(name='cutout', size=0.5),
    'weak (flip+translate)': dict(name='chain', ops=[dict(name='flip'),
                                                     dict(name='translate', pad=0.125)]),
    'randaugment n=2 +cutout': dict(name='randaugment'),
    'randaugment rotate only': dict(name='randaugment', ops=['rotate'], cutout=0),
    'features sigma+dropout': dict(name='features', sigma=0.1, p=0.1),
}
TEXT_AUGS = {f'tokens {m}': dict(name='tokens', mode=m, p=0.15, mask_id=103, keep_last=1)
             for m in ('dropout', 'mask', 'span')}


def timed(fn, *args, repeats: int) -> tuple[float, float]:
  """(compile + first call seconds, median ms of the next `repeats` calls)."""
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return first, 1e3 * statistics.median(times)


def cnn_step(batch: dict):
  """A jitted cnn:small train step (xent, Adam) and its state, for `batch`."""
  module = registry.build('models', dict(name='cnn', size='small'), num_classes=10)
  params = module.init({'params': jax.random.key(0)}, batch)['params']
  tx = optax.adam(1e-3)
  state = train.TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                           rng=jax.random.key(1))
  loss_fn = registry.bind('losses', dict(name='xent'))
  step = jax.jit(lambda s, b: train.train_step(
      s, b, apply_fn=train.linen_apply_fn(module), loss_fn=loss_fn, tx=tx,
      schedule=lambda _: 1e-3, total_steps=1000))
  return step, state


def image_rows(shape, repeats):
  rng = np.random.RandomState(0)
  b = shape[0]
  batch = {'x': jnp.asarray(rng.randint(0, 256, shape) / 255.0, jnp.float32),
           'label': jax.nn.one_hot(jnp.asarray(rng.randint(0, 10, b)), 10),
           'mask': jnp.ones(b, jnp.float32)}
  step, state = cnn_step(batch)
  _, step_ms = timed(step, state, batch, repeats=repeats)
  print(f'\nimages {list(shape)}: cnn:small train step {step_ms:.3f} ms')
  print(f'  {"augmentation":26s} {"ms/batch":>9s} {"x step":>7s} {"compile s":>10s}')
  for name, spec in IMAGE_AUGS.items():
    fn = jax.jit(registry.build('augment', spec))
    first, ms = timed(fn, jax.random.key(2), batch, repeats=repeats)
    print(f'  {name:26s} {ms:9.3f} {ms / step_ms:7.2f} {first:10.2f}')


def text_rows(b, t, repeats):
  rng = np.random.RandomState(0)
  lengths = rng.randint(8, t + 1, b)
  ids = rng.randint(1000, 30000, (b, t))
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask, ids, 0)
  ids[:, 0], ids[np.arange(b), lengths - 1] = 101, 102
  batch = {'input_ids': jnp.asarray(ids, jnp.int32), 'attention_mask': jnp.asarray(mask)}
  print(f'\ntext [{b}, {t}]:')
  for name, spec in TEXT_AUGS.items():
    fn = jax.jit(registry.build('augment', spec))
    first, ms = timed(fn, jax.random.key(2), batch, repeats=repeats)
    print(f'  {name:26s} {ms:9.3f} ms {first:10.2f} s compile')


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--repeats', type=int, default=50)
  ap.add_argument('--text_len', type=int, default=128)
  args = ap.parse_args()
  print(f'{jax.devices()[0].platform}: {jax.devices()[0].device_kind}, median of {args.repeats}')
  for shape in ((args.batch, 28, 28, 1), (args.batch, 32, 32, 3)):
    image_rows(shape, args.repeats)
  text_rows(args.batch, args.text_len, args.repeats)


if __name__ == '__main__':
  main()
