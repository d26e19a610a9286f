"""Meshes, batch and parameter shardings: data parallel by default, FSDP / tensor parallel by rules.

This is the modern form of `pmap`: `jax.jit` over global `jax.Array`s placed with `NamedSharding`.
Each host builds only its own slice of the global batch; `host_batch_to_global` assembles the
global array from the process-local pieces (single host, multi-GPU, TPU pod slice, or several
local CPU processes alike). Parameters (and the optimizer state that mirrors them) are laid out
by `w2s.partition` rules over the mesh's 'fsdp' and 'tensor' axes; replicated by default.
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


AXES = ('data', 'fsdp', 'tensor')   # mesh axes; the batch is split over the first two
BATCH_AXES = ('data', 'fsdp')


def make_mesh(num_devices: int | None = None, shape: dict | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over all devices (or the first `num_devices`).

  `shape` gives each axis a size, one of them -1 for "the rest" (default: all devices on
  'data', i.e. plain data parallelism). The batch is split over data x fsdp; parameters are
  split over 'fsdp' and 'tensor' by partition rules (`partition_specs`). 'tensor' should stay
  within a host (its devices see the same rows). Built from `jax.sharding.Mesh` directly with
  Auto axis types: `jax.make_mesh` defaults to Explicit axes, which break some Flax layers.
  """
  devices = jax.devices()
  if num_devices is not None and num_devices > 0:
    if num_devices > len(devices):
      raise UserError(f'mesh.num_devices={num_devices} but only {len(devices)} devices exist; '
                      'lower it or leave it 0 for all devices')
    if jax.process_count() > 1 and num_devices != len(devices):
      raise UserError('mesh.num_devices must be 0 (all devices) in a multi-process run')
    devices = devices[:num_devices]
  sizes = mesh_shape(shape, len(devices))
  grid = np.asarray(devices).reshape([sizes[a] for a in AXES])
  return Mesh(grid, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def mesh_shape(shape: dict | None, n: int) -> dict[str, int]:
  """{axis: size} for `n` devices from a partial shape with at most one -1 (UserError if not)."""
  shape = dict(shape or {})
  unknown = sorted(set(shape) - set(AXES))
  if unknown:
    raise UserError(f'mesh.shape has unknown axis {unknown[0]!r}; axes: {", ".join(AXES)}')
  sizes = {a: shape.get(a, -1 if a == 'data' and -1 not in shape.values() else 1) for a in AXES}
  if any(not isinstance(v, int) or isinstance(v, bool) or (v < 1 and v != -1)
         for v in sizes.values()):
    raise UserError(f'mesh.shape={shape} must give positive ints (one of them may be -1)')
  rest = [a for a, v in sizes.items() if v == -1]
  if len(rest) > 1:
    raise UserError(f'mesh.shape={shape}: only one axis may be -1 ("the rest of the devices")')
  known = int(np.prod([v for v in sizes.values() if v != -1]))
  if rest:
    if n % known:
      raise UserError(f'mesh.shape={shape}: {n} devices are not divisible by {known}')
    sizes[rest[0]] = n // known
  if int(np.prod(list(sizes.values()))) != n:
    raise UserError(f'mesh.shape={shape} covers {int(np.prod(list(sizes.values())))} devices, '
                    f'not the {n} in use; make one axis -1')
  return sizes


def batch_size_divisor(mesh: Mesh) -> int:
  """How many ways a global batch is split: the product of the batch axes present."""
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.shape]))


def _batch_axes(mesh: Mesh):
  axes = tuple(a for a in BATCH_AXES if a in mesh.shape)
  return axes if len(axes) > 1 else axes[0]


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh, leading: int = 0) -> NamedSharding:
  """Batch axis (after `leading` unsplit axes, e.g. ensemble members) split over data x fsdp."""
  return NamedSharding(mesh, P(*([None] * leading), _batch_axes(mesh)))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = 'batch_size') -> int:
  """Per-host batch size; a global batch the devices or hosts don't divide is a UserError."""
  n_dev, n_proc = batch_size_divisor(mesh), jax.process_count()
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
