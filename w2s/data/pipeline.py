"""Host-side batch iterators: seeded per-epoch shuffling, per-host slices, padded eval batches.

Every host holds the featurized split (in memory, or as a row source: see below) and computes
the same global batch indices from (seed, step); it then keeps only its own rows
`[p * L, (p + 1) * L)` of each global batch of size G = L * process_count. Because the order is
a pure function of (seed, step), a run resumed at step s sees exactly the batches an
uninterrupted run would, with no iterator state to checkpoint. Text batches are trimmed to the
longest sequence of the *global* batch (rounded up to a geometric bucket, `length_bucket` x 2^k:
`bucket_length`), so short texts don't pay for long ones, few shapes compile, and all hosts agree
on the shape.

The same iterators take a `w2s.data.streaming.RowSource` instead of the dict, for splits that do
not fit in host memory: a host slices its share out of the global index array and reads only those
rows. The trim length then comes from the source's per-row token counts (`RowSource.lengths()`,
int [N] in memory; an in-memory dict's are its attention_mask sums), indexed by the *global*
batch, so every host cuts to the same T without seeing the others' rows and the batches equal the
in-memory ones bit for bit. A source that does not know its lengths gives untrimmed batches (the
transform's full T, the same on every host). `num_rows`, `example_ids` and `sample_rows` answer
the trainer's questions about either kind.

With `groups` (a column such as 'bag_id' [N], groups of one size g) `train_batches` permutes
groups instead of rows, so every batch (and every microbatch of a gradient-accumulation step)
holds whole groups: what a loss over a group's members (the proportion loss's bags) needs. The
order is the same pure function of (seed, step), so resume and multi-host slicing work unchanged.
"""
import queue
import threading
from typing import Iterator

import numpy as np

from w2s.data import streaming
from w2s.errors import UserError

Batch = dict[str, np.ndarray]
Examples = dict | streaming.RowSource  # an in-memory split, or rows read from disk on demand


def one_hot_labels(examples: dict, num_classes: int) -> dict:
  """Integer 'label' [N] -> float32 soft labels [N, C]; soft labels pass through."""
  y = np.asarray(examples['label'])
  if y.ndim == 1:
    if y.size and (y.min() < 0 or y.max() >= num_classes):  # eye[-1] would be class C-1
      raise UserError(f'int labels must be in [0, {num_classes}) to become one-hot; got '
                      f'{y.min()}..{y.max()} (-1 is an unknown label: nothing trains on those)')
    y = np.eye(num_classes, dtype=np.float32)[y]
  return {**examples, 'label': y.astype(np.float32)}


def _source(examples: Examples) -> streaming.RowSource:
  if isinstance(examples, streaming.RowSource):
    return examples
  return streaming.ArraySource(examples)


def num_rows(examples: Examples) -> int:
  """N, the rows of an in-memory split or a source."""
  return len(examples) if isinstance(examples, streaming.RowSource) else len(examples['id'])


def example_ids(examples: Examples) -> np.ndarray:
  """int64 [N] example ids, in row order."""
  ids = examples.ids() if isinstance(examples, streaming.RowSource) else examples['id']
  return np.asarray(ids, np.int64)


def sample_rows(examples: Examples, n: int = 1) -> Batch:
  """The numeric fields of the first n rows (model init, shapes): [n, ...] each."""
  if isinstance(examples, streaming.RowSource):
    return examples.rows(np.arange(min(n, len(examples))))
  return {k: v[:n] for k, v in examples.items() if np.asarray(v).dtype != object}


def with_row_index(examples: Examples) -> Examples:
  """Adds 'index' int32 [N] = row position (the key of per-example loss state)."""
  if isinstance(examples, streaming.RowSource):
    return streaming.WithRowIndex(examples)
  return {**examples, 'index': np.arange(num_rows(examples), dtype=np.int32)}


def bucket_length(longest: int, length_bucket: int, full: int) -> int:
  """The padded length of a batch whose longest sequence has `longest` tokens: the smallest
  `length_bucket * 2**k` >= longest, capped at `full` (the tokenized T).

  Geometric buckets (16, 32, 64, ... up to T) give one compiled shape per doubling instead of one
  per multiple of 16 (T = 512: 6 shapes, not 32), shared by training, held-out evaluation and
  prediction; attention masks make the padded tokens inert, so the bucket changes no result beyond
  float rounding. A batch pays at most 2x its longest sequence in padding.
  """
  if length_bucket < 1:
    raise UserError(f'length_bucket={length_bucket} must be a positive number of tokens (16)')
  t = length_bucket
  while t < longest:
    t *= 2
  return min(full, t)


def _trim_length(batch: Batch, lengths: np.ndarray | None, global_idx: np.ndarray,
                 length_bucket: int) -> Batch:
  """Cuts [B, T] token fields to the global batch's longest sequence (`bucket_length`).

  `lengths` [N] are the token counts of every row; `global_idx` [G] the global batch's rows.
  """
  if lengths is None or 'attention_mask' not in batch:
    return batch
  longest = int(lengths[global_idx].max(initial=1))
  t = bucket_length(longest, length_bucket, batch['attention_mask'].shape[-1])
  return {k: (v[..., :t] if k in TOKEN_FIELDS else v) for k, v in batch.items()}


# the [..., T] fields cut to a batch's longest sequence ('loss_mask': a generative stage's targets)
TOKEN_FIELDS = ('input_ids', 'attention_mask', 'token_type_ids', 'loss_mask')


def _host_slice(x: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """This host's contiguous block `[p * L, (p + 1) * L)` of a global [G, ...] array."""
  local = len(x) // process_count
  return x[process_index * local:(process_index + 1) * local]


def _read(source: streaming.RowSource, idx: np.ndarray, mask: np.ndarray, lengths, *,
          process_index: int, process_count: int, length_bucket: int) -> Batch:
  """Host-local batch of the global rows `idx` [G]: reads only this host's rows of them."""
  rows = source.rows(_host_slice(idx, process_index, process_count))
  rows['mask'] = _host_slice(mask, process_index, process_count)
  return _trim_length(rows, lengths, idx, length_bucket)


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  if num_examples < global_batch:
    raise UserError(f'training split has {num_examples} examples, fewer than one batch of '
                    f'{global_batch}; lower batch_size')
  return num_examples // global_batch


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def group_rows(groups: np.ndarray, global_batch: int, accum_steps: int = 1,
               key: str = 'group') -> np.ndarray:
  """Row indices of each group, [G, g] (groups by sorted id, rows in row order), or a UserError
  unless every group has the same size g and g divides the B / A rows of a microbatch."""
  ids, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
  if counts.min() != counts.max():
    raise UserError(f'{key}: batches of whole groups need groups of one size; the {len(ids)} '
                    f'groups have {counts.min()} to {counts.max()} rows')
  g, unit = int(counts[0]), int(counts[0]) * accum_steps
  if global_batch % unit:
    raise UserError(f'batch_size={global_batch} (accum_steps={accum_steps}) does not split into '
                    f'whole {key} groups of {g} rows per (micro)batch; use a multiple of {unit}, '
                    f'e.g. batch_size={max(unit, global_batch // unit * unit)}')
  return np.argsort(inverse.ravel(), kind='stable').reshape(len(ids), g)


def group_permutation(members: np.ndarray, seed: int, epoch: int) -> np.ndarray:
  """Row order [N] of one epoch: the groups of `members` [G, g] in a seeded random order, each
  group's rows together."""
  return members[np.random.default_rng([seed, epoch]).permutation(len(members))].ravel()


def _interleave(idx: np.ndarray, accum_steps: int) -> np.ndarray:
  """[B] rows as A contiguous blocks -> the order in which `train._microbatches` (microbatch i
  = rows i, i + A, ...) gives block i back as microbatch i."""
  return idx.reshape(accum_steps, -1).T.ravel()


def train_batches(examples: Examples, *, global_batch: int, seed: int, start_step: int = 0,
                  num_steps: int | None = None, process_index: int = 0, process_count: int = 1,
                  length_bucket: int = 16, groups: np.ndarray | None = None,
                  accum_steps: int = 1) -> Iterator[Batch]:
  """Host-local training batches for steps start_step, start_step + 1, ...

  Each epoch is a fresh seeded permutation; the last partial batch of an epoch is dropped (its
  examples come back shuffled in the next epoch). All rows are real: 'mask' is all ones.
  `examples`: an in-memory split (numeric fields are batched) or a `streaming.RowSource`.
  `groups` [N] (e.g. bag ids): permute whole groups instead (see the module docstring); each of
  the `accum_steps` microbatches of a batch then holds whole groups too.
  """
  source = _source(examples)
  n = len(source)
  per_epoch = steps_per_epoch(n, global_batch)
  members = None if groups is None else group_rows(groups, global_batch, accum_steps)
  lengths = source.lengths()
  mask = np.ones(global_batch, np.float32)
  step, perm_epoch, perm = start_step, -1, None
  while num_steps is None or step < start_step + num_steps:
    epoch, i = divmod(step, per_epoch)
    if epoch != perm_epoch:
      perm = (epoch_permutation(n, seed, epoch) if members is None
              else group_permutation(members, seed, epoch))
      perm_epoch = epoch
    idx = perm[i * global_batch:(i + 1) * global_batch]
    if members is not None and accum_steps > 1:
      idx = _interleave(idx, accum_steps)
    yield _read(source, idx, mask, lengths, process_index=process_index,
                process_count=process_count, length_bucket=length_bucket)
    step += 1


def eval_batches(examples: Examples, *, global_batch: int, process_index: int = 0,
                 process_count: int = 1, length_bucket: int = 16) -> Iterator[Batch]:
  """Host-local batches covering every example exactly once, in order.

  The final partial batch is padded with copies of row 0 whose 'mask' is 0, so every global batch
  has the same size; consumers must drop rows with mask 0 (or weight by mask).
  """
  source = _source(examples)
  n = len(source)
  lengths = source.lengths()
  for start in range(0, n, global_batch):
    idx = np.arange(start, min(start + global_batch, n))
    pad = global_batch - len(idx)
    mask = np.concatenate([np.ones(len(idx)), np.zeros(pad)]).astype(np.float32)
    yield _read(source, np.concatenate([idx, np.zeros(pad, idx.dtype)]), mask, lengths,
                process_index=process_index, process_count=process_count,
                length_bucket=length_bucket)


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
