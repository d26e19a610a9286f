"""Batch statistics are global: every loss, jitted on a batch sharded over 8 devices, equals the
single-device value (tests/conftest.py gives the process 8 CPU devices)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2s import registry

LOSSES = ['xent', 'logconf', 'entropy', 'product', 'window', 'bootstrap', 'gce', 'adaptconf',
          'reliability']
BATCH = 32


@pytest.fixture(scope='module')
def mesh():
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)')
  return Mesh(np.array(jax.devices()[:8]), ('data',))


def _batch(num_classes, seed=0):
  """A batch whose rows are sorted by student confidence, so every shard sees a different
  local distribution (a shard-local quantile or prior would be far off), with padding on two
  shards."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(BATCH, num_classes)) * 2
  logits = logits[np.argsort(logits[:, 0] - logits[:, 1:].max(-1))]
  labels = rng.dirichlet(np.ones(num_classes), size=BATCH)
  labels[: BATCH // 2] = labels[: BATCH // 2] ** 3  # a different weak prior per half
  labels /= labels.sum(-1, keepdims=True)
  mask = np.ones(BATCH)
  mask[[3, 17, 18, 31]] = 0
  return dict(logits=logits, label=labels, mask=mask,
              member_probs=rng.dirichlet(np.ones(num_classes), size=(BATCH, 5)))


def _apply(name, batch, step_frac):
  loss_fn = registry.bind('losses', dict(name=name))
  return loss_fn(logits=batch['logits'], labels=batch['label'], mask=batch['mask'],
                 step_frac=step_frac, batch=batch)


@pytest.mark.parametrize('name, num_classes', [(name, 3) for name in LOSSES] + [('logconf', 2)])
def test_sharded_equals_single_device(mesh, name, num_classes):
  batch = {k: np.asarray(v, np.float32) for k, v in _batch(num_classes).items()}
  fn = jax.jit(_apply, static_argnums=0)
  single = fn(name, jax.device_put(batch, jax.devices()[0]), jnp.float32(0.05))
  sharded_batch = jax.device_put(batch, NamedSharding(mesh, P('data')))
  sharded = fn(name, sharded_batch, jnp.float32(0.05))
  assert sharded[0].sharding.is_equivalent_to(NamedSharding(mesh, P('data')), 1)
  chex.assert_trees_all_close(jax.device_get(sharded), jax.device_get(single), atol=1e-6)


def test_shard_local_statistics_would_differ(mesh):
  """The check above has teeth: logconf computed shard by shard is not the global value."""
  batch = {k: np.asarray(v, np.float32) for k, v in _batch(2).items()}
  fn = jax.jit(_apply, static_argnums=0)
  global_pe, _ = fn('logconf', batch, 1.0)
  shards = [fn('logconf', {k: v[i:i + 4] for k, v in batch.items()}, 1.0)[0]
            for i in range(0, BATCH, 4)]
  assert np.abs(np.concatenate(shards) - np.asarray(global_pe)).max() > 1e-2
