"""Host-side batch iterators: seeded per-epoch shuffling, per-host slices, padded eval batches.

Every host holds the (small, in-memory) featurized split and computes the same global batch
indices from (seed, step); it then keeps only its own rows `[p * L, (p + 1) * L)` of each global
batch of size G = L * process_count. Because the order is a pure function of (seed, step), a run
resumed at step s sees exactly the batches an uninterrupted run would, with no iterator state to
checkpoint. Text batches are trimmed to the longest sequence of the *global* batch (rounded up to
a multiple of `length_bucket`), so short texts don't pay for long ones and all hosts agree on the
shape.
"""
import queue
import threading
from typing import Iterator

import numpy as np

from w2s.errors import UserError

Batch = dict[str, np.ndarray]


def one_hot_labels(examples: dict, num_classes: int) -> dict:
  """Integer 'label' [N] -> float32 soft labels [N, C]; soft labels pass through."""
  y = np.asarray(examples['label'])
  if y.ndim == 1:
    y = np.eye(num_classes, dtype=np.float32)[y]
  return {**examples, 'label': y.astype(np.float32)}


def _numeric(examples: dict) -> dict:
  return {k: v for k, v in examples.items() if np.asarray(v).dtype != object}


def _num_rows(examples: dict) -> int:
  return len(examples['id'])


def _trim_length(batch: Batch, rows: dict, length_bucket: int) -> Batch:
  """Cuts [B, T] token fields to the global batch's longest sequence (bucketed)."""
  if 'attention_mask' not in rows:
    return batch
  longest = int(rows['attention_mask'].sum(axis=1).max(initial=1))
  t = min(rows['attention_mask'].shape[1], -(-longest // length_bucket) * length_bucket)
  return {k: (v[:, :t] if k in ('input_ids', 'attention_mask', 'token_type_ids') else v)
          for k, v in batch.items()}


def _host_slice(rows: dict, process_index: int, process_count: int) -> Batch:
  g = len(rows['id'])
  local = g // process_count
  return {k: v[process_index * local:(process_index + 1) * local] for k, v in rows.items()}


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  if num_examples < global_batch:
    raise UserError(f'training split has {num_examples} examples, fewer than one batch of '
                    f'{global_batch}; lower batch_size')
  return num_examples // global_batch


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_batches(examples: dict, *, global_batch: int, seed: int, start_step: int = 0,
                  num_steps: int | None = None, process_index: int = 0, process_count: int = 1,
                  length_bucket: int = 16) -> Iterator[Batch]:
  """Host-local training batches for steps start_step, start_step + 1, ...

  Each epoch is a fresh seeded permutation; the last partial batch of an epoch is dropped (its
  examples come back shuffled in the next epoch). All rows are real: 'mask' is all ones.
  """
  data = _numeric(examples)
  n = _num_rows(data)
  per_epoch = steps_per_epoch(n, global_batch)
  step, perm_epoch, perm = start_step, -1, None
  while num_steps is None or step < start_step + num_steps:
    epoch, i = divmod(step, per_epoch)
    if epoch != perm_epoch:
      perm, perm_epoch = epoch_permutation(n, seed, epoch), epoch
    idx = perm[i * global_batch:(i + 1) * global_batch]
    rows = {k: v[idx] for k, v in data.items()}
    rows['mask'] = np.ones(global_batch, np.float32)
    yield _trim_length(_host_slice(rows, process_index, process_count), rows, length_bucket)
    step += 1


def eval_batches(examples: dict, *, global_batch: int, process_index: int = 0,
                 process_count: int = 1, length_bucket: int = 16) -> Iterator[Batch]:
  """Host-local batches covering every example exactly once, in order.

  The final partial batch is padded with copies of row 0 whose 'mask' is 0, so every global batch
  has the same size; consumers must drop rows with mask 0 (or weight by mask).
  """
  data = _numeric(examples)
  n = _num_rows(data)
  for start in range(0, n, global_batch):
    idx = np.arange(start, min(start + global_batch, n))
    pad = global_batch - len(idx)
    rows = {k: v[np.concatenate([idx, np.zeros(pad, idx.dtype)])] for k, v in data.items()}
    rows['mask'] = np.concatenate([np.ones(len(idx)), np.zeros(pad)]).astype(np.float32)
    yield _trim_length(_host_slice(rows, process_index, process_count), rows, length_bucket)


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Runs `iterator` in a background thread, `size` items ahead."""
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def worker():
    try:
      for item in iterator:
        q.put(item)
    except BaseException as e:  # re-raised in the consumer
      q.put(e)
    q.put(done)

  threading.Thread(target=worker, daemon=True).start()
  while True:
    item = q.get()
    if item is done:
      return
    if isinstance(item, BaseException):
      raise item
    yield item
