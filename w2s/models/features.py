"""Frozen-backbone features, extracted once and cached on disk (the release's `linear_probe`).

Burns et al. (2023) also train heads on frozen features (their vision experiments and the
`linear_probe` option): the backbone runs once per example, and only a linear head is trained.
Here the forward pass is jitted and batched; text is sorted by length and each batch is padded
only to its longest sequence (rounded up to `pad_multiple` so few shapes compile), which on a CPU
is what makes MiniLM-size extraction affordable. Results are cached on disk under a key hashing
everything that determines them: the model (family, architecture, pooling), the checkpoint files
(path, size, mtime) and a digest of the params, the dataset, split and the tokenizer settings. A
second call for the same split runs no forward pass; a call with ids the cache lacks computes just
those and extends the cache.

The cache of one key is a directory of chunks of (example ids, features) (`w2s.models.
feature_store`), each written atomically as soon as its rows are computed, after which
`w2s.preemption.check` runs: a preempted extraction keeps every finished chunk and the rerun
computes only the rows still missing. A read is the union of the chunks by example id, so a run
extracts only the rows it asks for and a later, larger run only those no run has cached yet.

Which directory holds it (`cache_dirs(<workdir>/features)`, called by the protocols' learners):
the key makes features safe to share, so by default every workdir uses one user cache
(`$W2S_CACHE_DIR`, else `~/.cache/w2s/features`) and a second workdir (a notebook beside the
CLI, a sweep point) extracts nothing another run already has; `W2S_CACHE_DIR=` (empty) keeps
them in `<workdir>/features` only. Precedence and fallbacks: `w2s.models.feature_store`.
"""
import contextvars
import dataclasses
import hashlib
import os
import re
import sys
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from w2s import metrics
from w2s import preemption
from w2s.errors import UserError
from w2s.models import feature_store as store
from w2s.models import hf_import

# Rows per cache chunk: at least CHUNK_ROWS (~25 s of MiniLM on a 2-core CPU, seq 128), more when
# one call misses more than CHUNK_ROWS * MAX_CHUNKS rows, so a big accelerator extraction does not
# write thousands of files. Fixed sizes, not timed ones, so every host of a multi-host run cuts
# the same chunks (same files, same number of forward calls).
CHUNK_ROWS = 1024
MAX_CHUNKS = 64
# Rows per extraction forward on a CPU. MiniLM on the main job's batches of Rotten Tomatoes
# (benchmarks/extract_batch.py, 2-core CPU): 16, 32 and 128 ran alike (~100 ex/s) and 256 1.8x
# slower. A chunk of CHUNK_ROWS is sorted and cut into batches on its own, so a big batch spans
# more lengths and pads more (1.86 padded tokens per real one at 256, 1.40 at 32), and its MLP
# activations ([B, T, 1536] float32: 50 MB at 256 x 32 tokens) outgrow the 32 MB L3. 32: among
# the fastest, with room in the caches for whatever else runs.
CPU_BATCH_SIZE = 32
# the store's public names, so that callers need this module only
cache_path, cache_dirs, user_cache_dir = store.cache_path, store.cache_dirs, store.user_cache_dir


@dataclasses.dataclass
class _Extraction:
  """One `cached` call's progress over the chunks it hands to `compute` (read by `extract`)."""
  total: int
  done: int = 0
  progress: metrics.Progress | None = None
  desc: str | None = None
  forward: tuple | None = None  # (model, its default_forward): one jit, so chunks reuse compiles


_CURRENT: contextvars.ContextVar[_Extraction | None] = contextvars.ContextVar(
    'w2s_feature_extraction', default=None)


def default_batch_size(backend: str | None = None, *, accelerator: int = 256) -> int:
  """Rows per extraction forward on `backend` (default: JAX's default backend) when the caller
  does not choose: `CPU_BATCH_SIZE` on a CPU, `accelerator` (a large batch, which a GPU / TPU
  needs to be busy) elsewhere. The batch size changes no feature beyond float rounding: every
  row is masked to its own tokens, whatever it is padded to."""
  backend = backend or jax.default_backend()
  return CPU_BATCH_SIZE if backend == 'cpu' else accelerator


def default_forward(model) -> Callable:
  """Jitted (params, batch) -> pooled features [B, D] of any w2s model with a `features` method."""
  return jax.jit(lambda params, batch: model.apply({'params': params}, batch, method='features'))


def _batches(inputs: dict[str, np.ndarray], batch_size: int, pad_multiple: int):
  """Yields (row indices, batch) with rows padded to batch_size; text sorted longest first."""
  n = len(next(iter(inputs.values())))
  if 'attention_mask' in inputs:
    lengths = inputs['attention_mask'].sum(axis=1)
    order = np.argsort(-lengths, kind='stable')
  else:
    lengths, order = None, np.arange(n)
  for start in range(0, n, batch_size):
    rows = order[start:start + batch_size]
    batch = {k: v[rows] for k, v in inputs.items()}
    if lengths is not None:  # pad to the batch's longest, rounded up to pad_multiple
      t = int(-(-max(lengths[rows].max(), 1) // pad_multiple) * pad_multiple)
      batch = {k: np.pad(v[:, :t], ((0, 0), (0, max(0, t - v.shape[1])))) for k, v in batch.items()}
    if len(rows) < batch_size:  # fixed batch shape: fewer compilations; padded rows are dropped
      batch = {k: np.concatenate([v, np.zeros((batch_size - len(rows),) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    yield rows, batch


def extract(model, params, inputs: dict[str, np.ndarray], *, batch_size: int | None = None,
            pad_multiple: int = 16, forward: Callable | None = None, desc: str = 'features',
            log_every_s: float = 5.0) -> np.ndarray:
  """Pooled features [N, D] float32 of `inputs`, in their order (no cache).

  Args:
    model, params: a w2s model (with a `features` method) and its params.
    inputs: {'input_ids', 'attention_mask'} int [N, T] (right-padded) or {'x'} [N, ...].
    batch_size: rows per forward call; default `default_batch_size()` (the backend's).
    forward: (params, batch) -> [B, D]; default `default_forward(model)`.
    desc: name on the progress line (`metrics.Progress` adds the brackets; brackets in `desc`
      are dropped). Inside `cached`, one line counts over all of its chunks.
  """
  n = len(next(iter(inputs.values())))
  batch_size = batch_size or default_batch_size()
  name = ' '.join(re.sub(r'[\[\]]', ' ', desc).split()) or 'features'
  run = _CURRENT.get()
  if run is None:
    progress, offset = metrics.Progress(name, n, min_interval_s=log_every_s), 0
  else:
    if run.progress is None:
      run.progress = metrics.Progress(name, run.total, min_interval_s=log_every_s)
      run.desc = name
    progress, offset = run.progress, run.done
  if forward is None:
    if run is not None and run.forward is not None and run.forward[0] is model:
      forward = run.forward[1]
    else:
      forward = default_forward(model)
      if run is not None:
        run.forward = (model, forward)
  out, done = None, 0
  for rows, batch in _batches(inputs, batch_size, pad_multiple):
    feats = np.asarray(forward(params, batch), np.float32)[:len(rows)]
    if out is None:
      out = np.zeros((n, feats.shape[1]), np.float32)
    out[rows] = feats
    done += len(rows)
    progress.update(offset + done)
  return out if out is not None else np.zeros((0, 0), np.float32)


def tokenize(texts, tokenizer_dir: str, *, max_length: int) -> dict[str, np.ndarray]:
  """Texts -> right-padded {'input_ids', 'attention_mask'} int32 [N, max_length] with the
  checkpoint's tokenizer (`w2s.data.text.tokenize`; `extract` trims each batch to its longest)."""
  from w2s.data import text as text_lib
  return text_lib.tokenize([str(t) for t in texts], tokenizer_dir, max_length)


def params_digest(params) -> str:
  """Cheap fingerprint of a param tree: shapes plus a strided sample of every leaf."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    flat = jnp.ravel(leaf)
    sample = np.asarray(flat[::max(1, flat.size // 1024)], np.float32)
    h.update(f'{jax.tree_util.keystr(path)}{leaf.shape}'.encode() + sample.tobytes())
  return h.hexdigest()


def model_key(model, params) -> dict:
  """What about the model decides its features: architecture, pooling, checkpoint, params."""
  desc = re.sub(r'\n\s*num_classes = \d+', '', repr(model))
  path = getattr(model, 'pretrained', None)
  return {'model': desc, 'checkpoint': hf_import.fingerprint(path) if path else None,
          'params': params_digest(params)}


def cached(ids: np.ndarray, *, cache_dir: str | None, key: dict,
           compute: Callable[[np.ndarray], np.ndarray], chunk_rows: int = CHUNK_ROWS,
           also_read: tuple[str, ...] = (), desc: str | None = None) -> np.ndarray:
  """Features [N, D] of examples `ids` (int [N]), in that order, through an on-disk cache.

  `compute(rows)` gives the features of rows `rows` of `ids` (the ones the cache lacks), called
  once per chunk of at least `chunk_rows` rows; each chunk is saved before the next starts and
  `w2s.preemption.check` runs after it (raising `preemption.Preempted` after SIGTERM / SIGINT).
  With cache_dir None nothing is stored. `also_read`: other cache directories (`cache_dirs`);
  rows of `ids` only they hold are copied into `cache_dir` as one chunk instead of computed.
  Before computing, one line on stderr says how many rows (`[desc] extracting 128 of 640
  rows ...`; default name: the key's directory). Files: `cache_path` and the module docstring.
  """
  ids = np.asarray(ids, np.int64)
  if len(np.unique(ids)) != len(ids):
    raise UserError('feature extraction got duplicate example ids; ids must be unique per split')
  if cache_dir is None:
    return compute(np.arange(len(ids)))
  folder = store.cache_path(cache_dir, key)
  have_ids, have = store.load(folder)
  known = store.index(have_ids)
  missing = _missing(ids, known)
  copied = 0
  if len(missing) and also_read:
    got = store.adopt(folder, [store.cache_path(d, key) for d in also_read], ids[missing], key,
                      None if have is None else have.shape[1])
    if got is not None:
      copied = len(got[0])
      have_ids = np.concatenate([have_ids, got[0]])
      have = got[1] if have is None else np.concatenate([have, got[1].astype(have.dtype)])
      known = store.index(have_ids)
      missing = _missing(ids, known)
  if len(missing):
    _say(f'[{desc or os.path.basename(folder)}] extracting {len(missing)} of {len(ids)} rows ('
         f'{len(ids) - len(missing)} cached{f", {copied} copied" if copied else ""}) into {folder}')
    have_ids, have = _fill(folder, ids, missing, key, compute, chunk_rows, have_ids, have)
    known = store.index(have_ids)
  logging.info('feature cache %s: %d rows asked, %d copied from another cache, %d extracted',
               folder, len(ids), copied, len(missing))
  if have is None:  # no ids asked for, none cached
    return np.zeros((0, 0), np.float32)
  return have[[known[x] for x in ids.tolist()]]


def _say(line: str) -> None:
  if jax.process_index() == 0:
    print(line, file=sys.stderr, flush=True)


def _missing(ids: np.ndarray, known: dict[int, int]) -> np.ndarray:
  """Positions in `ids` of the examples `known` lacks."""
  return np.array([i for i, x in enumerate(ids.tolist()) if x not in known], np.int64)


def _fill(folder, ids, missing, key, compute, chunk_rows, have_ids, have):
  """Computes rows `missing` of `ids` chunk by chunk, saving each; (all ids, all features)."""
  size = max(chunk_rows, -(-len(missing) // MAX_CHUNKS))
  os.makedirs(folder, exist_ok=True)  # the key's directory shows that extraction has started
  run = _Extraction(total=len(missing))
  token = _CURRENT.set(run)
  parts_ids, parts = [have_ids], ([] if have is None else [have])
  try:
    for start in range(0, len(missing), size):
      rows = missing[start:start + size]
      new = np.asarray(compute(rows))
      if have is not None:
        new = new.astype(have.dtype)
      store.save_chunk(folder, ids[rows], new, key)
      parts_ids.append(ids[rows])
      parts.append(new)
      run.done += len(rows)
      where = run.desc or os.path.basename(folder)
      cached_rows = len(ids) - len(missing) + run.done
      preemption.check(f'feature extraction {where}',
                       saved=f'{cached_rows}/{len(ids)} rows are cached in {folder}')
  finally:
    _CURRENT.reset(token)
  return np.concatenate(parts_ids), np.concatenate(parts)


def text_features(model, params, texts, ids, *, cache_dir: str | None, dataset: str, split: str,
                  max_length: int = 128, tokenizer_dir: str | None = None,
                  batch_size: int | None = None,
                  forward: Callable | None = None, log_every_s: float = 5.0) -> np.ndarray:
  """Frozen features [N, D] of texts (object [N]) with example ids [N], cached on disk.

  Tokenises with `tokenizer_dir` (default: the model's checkpoint directory), truncating to
  max_length, and extracts with `extract`; see the module docstring for the cache key.
  """
  tokenizer_dir = tokenizer_dir or getattr(model, 'pretrained', None)
  if tokenizer_dir is None:
    raise UserError('text_features needs a tokenizer: create the model with pretrained=... or pass '
                    'tokenizer_dir=<directory with tokenizer.json>')
  key = dict(model_key(model, params), dataset=dataset, split=split,
             tokenizer=hf_import.fingerprint(tokenizer_dir), max_length=max_length)
  texts = np.asarray(texts, dtype=object)

  def compute(rows):
    inputs = tokenize(texts[rows], tokenizer_dir, max_length=max_length)
    return extract(model, params, inputs, batch_size=batch_size, forward=forward,
                   desc=f'features {dataset}/{split}', log_every_s=log_every_s)

  return cached(ids, cache_dir=cache_dir, key=key, compute=compute)
