"""Data parallelism over every device: a ('data',) mesh, replicated params, sharded batches.

This is the modern form of `pmap`: `jax.jit` over global `jax.Array`s placed with `NamedSharding`.
Each host builds only its own slice of the global batch; `host_batch_to_global` assembles the
global array from the process-local pieces (single host, multi-GPU, TPU pod slice, or several
local CPU processes alike).
"""
import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from w2s.errors import UserError


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_count: int | None = None) -> None:
  """`jax.distributed.initialize`, before any other JAX call.

  On TPU pods and SLURM/Open MPI GPU clusters all arguments are auto-detected; several local CPU
  processes (how pods are tested here) need the coordinator, counts and gloo collectives.
  """
  if local_device_count:
    jax.config.update('jax_num_cpu_devices', local_device_count)
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D ('data',) mesh over all devices (or the first `num_devices`, single process only).

  Built from `jax.sharding.Mesh` directly with Auto axis types: `jax.make_mesh` defaults to
  Explicit axes, which break some Flax layers.
  """
  devices = jax.devices()
  if num_devices is not None and num_devices > 0:
    if num_devices > len(devices):
      raise UserError(f'mesh.num_devices={num_devices} but only {len(devices)} devices exist; '
                      'lower it or leave it 0 for all devices')
    if jax.process_count() > 1 and num_devices != len(devices):
      raise UserError('mesh.num_devices must be 0 (all devices) in a multi-process run')
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data', the rest replicated."""
  return NamedSharding(mesh, P('data'))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = 'batch_size') -> int:
  """Per-host batch size; a global batch the devices or hosts don't divide is a UserError."""
  n_dev, n_proc = mesh.devices.size, jax.process_count()
  if global_batch <= 0 or global_batch % n_dev:
    raise UserError(f'{what}={global_batch} is not divisible by the {n_dev} devices of the mesh; '
                    f'use a multiple of {n_dev} (e.g. {max(n_dev, global_batch // n_dev * n_dev)})')
  return global_batch // n_proc


def host_batch_to_global(batch: dict, mesh: Mesh) -> dict:
  """Process-local numpy batch (this host's rows) -> global jax.Arrays sharded over 'data'."""
  sharding = data_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      batch)


def to_host(tree):
  """Fully-addressable numpy copy of (possibly multi-host sharded) global arrays, on every host."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
