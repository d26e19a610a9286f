"""The memory plan of a train step, per device, before it runs.

XLA knows what a compiled step needs: its arguments (parameters, optimizer state, the batch), its
outputs and its temporaries (activations, gradients). `plan` lowers and compiles the step on
abstract inputs, so nothing is allocated, and splits the arguments into parameters and optimizer
state from their shardings. On an accelerator that reports its memory (`memory_stats()`), `fit`
prints the plan at start and refuses, in one line and before training, a step that cannot fit;
on a CPU (no limit to check) it runs only with `W2S_MEMORY_PLAN=1`.
"""
import os

import jax

from w2s import partition
from w2s.errors import UserError

GiB = 1 << 30


def enabled() -> bool:
  return os.environ.get('W2S_MEMORY_PLAN') == '1' or device_limit() is not None


def device_limit() -> int | None:
  """Bytes one device may allocate, if the platform reports it (GPU / TPU), else None."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  # platforms without the API
    return None
  return int(stats['bytes_limit']) if stats and 'bytes_limit' in stats else None


def plan(step_fn, abstract_state, abstract_batch) -> dict:
  """Per-device bytes: params, optimizer state, arguments, temporaries, outputs, total."""
  compiled = step_fn.lower(abstract_state, abstract_batch).compile()
  m = compiled.memory_analysis()
  out = {'params': partition.per_device_bytes(abstract_state.params),
         'opt_state': partition.per_device_bytes(abstract_state.opt_state),
         'arguments': int(m.argument_size_in_bytes), 'temp': int(m.temp_size_in_bytes),
         'outputs': int(m.output_size_in_bytes), 'aliased': int(m.alias_size_in_bytes)}
  out['total'] = out['arguments'] + out['temp'] + out['outputs'] - out['aliased']
  return out


def human_bytes(b: int) -> str:
  """'1.50 GiB', '12.0 MiB', '640 KiB', '12 B'."""
  for unit, size in (('GiB', GiB), ('MiB', 1 << 20), ('KiB', 1 << 10)):
    if b >= size:
      return f'{b / size:.3g} {unit}'
  return f'{b} B'


def report(step_fn, abstract_state, abstract_batch, *, name: str) -> dict:
  """Prints the plan (process 0) and raises a UserError when it exceeds the device's memory."""
  p = plan(step_fn, abstract_state, abstract_batch)
  limit = device_limit()
  gib = human_bytes
  if jax.process_index() == 0:
    print(f'[{name}] memory per device: params {gib(p["params"])}, optimizer state '
          f'{gib(p["opt_state"])}, temporaries {gib(p["temp"])}, total {gib(p["total"])}'
          + (f' of {gib(limit)}' if limit else ''), flush=True)
  if limit is not None and p['total'] > limit:
    raise UserError(f'{name}: the train step needs {gib(p["total"])} per device but a device has '
                    f'{gib(limit)}; shard the state (train.partition="fsdp" with a larger '
                    'mesh.shape fsdp axis), train LoRA adapters only, use bfloat16, or lower '
                    'batch_size / raise accum_steps')
  return p
