"""Frozen-backbone features, extracted once and cached on disk (the release's `linear_probe`).

Burns et al. (2023) also train heads on frozen features (their vision experiments and the
`linear_probe` option): the backbone runs once per example, and only a linear head is trained.
Here the forward pass is jitted and batched; text is sorted by length and each batch is padded
only to its longest sequence (rounded up to `pad_multiple` so few shapes compile), which on a CPU
is what makes MiniLM-size extraction affordable. Results are cached as .npz (written atomically)
under a key hashing everything that determines them: the model (family, architecture, pooling),
the checkpoint files (path, size, mtime) and a digest of the params, the dataset, split and the
tokenizer settings. A second call for the same split runs no forward pass; a call with ids the
cache lacks computes just those and extends the cache.
"""
import hashlib
import json
import os
import re
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from w2s import metrics
from w2s.errors import UserError
from w2s.models import hf_import


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


def extract(model, params, inputs: dict[str, np.ndarray], *, batch_size: int = 64,
            pad_multiple: int = 16, forward: Callable | None = None, desc: str = 'features',
            log_every_s: float = 5.0) -> np.ndarray:
  """Pooled features [N, D] float32 of `inputs`, in their order (no cache).

  Args:
    model, params: a w2s model (with a `features` method) and its params.
    inputs: {'input_ids', 'attention_mask'} int [N, T] (right-padded) or {'x'} [N, ...].
    forward: (params, batch) -> [B, D]; default `default_forward(model)`.
  """
  forward = forward or default_forward(model)
  n = len(next(iter(inputs.values())))
  out, done = None, 0
  progress = metrics.Progress(desc, n, min_interval_s=log_every_s)
  for rows, batch in _batches(inputs, batch_size, pad_multiple):
    feats = np.asarray(forward(params, batch), np.float32)[:len(rows)]
    if out is None:
      out = np.zeros((n, feats.shape[1]), np.float32)
    out[rows] = feats
    done += len(rows)
    progress.update(done)
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


def _save(file: str, ids: np.ndarray, feats: np.ndarray, key: dict):
  os.makedirs(os.path.dirname(file) or '.', exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=os.path.dirname(file) or '.', suffix='.tmp',
                                   delete=False) as f:
    np.savez(f, ids=ids, features=feats, key=json.dumps(key, sort_keys=True))
    f.flush()
    os.fsync(f.fileno())
  os.replace(f.name, file)


def cached(ids: np.ndarray, *, cache_dir: str | None, key: dict,
           compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """Features [N, D] of examples `ids` (int [N]), in that order, through an on-disk cache.

  `compute(rows)` gives the features of rows `rows` of `ids` (the ones the cache lacks); with
  cache_dir None nothing is stored. The file is `<cache_dir>/<dataset>-<split>-<hash>.npz`.
  """
  ids = np.asarray(ids, np.int64)
  if len(np.unique(ids)) != len(ids):
    raise UserError('feature extraction got duplicate example ids; ids must be unique per split')
  if cache_dir is None:
    return compute(np.arange(len(ids)))
  digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
  stem = re.sub(r'[^A-Za-z0-9_.-]+', '_', f'{key.get("dataset", "data")}-{key.get("split", "")}')
  file = os.path.join(cache_dir, f'{stem}-{digest}.npz')
  have_ids, have = np.zeros((0,), np.int64), None
  if os.path.exists(file):
    with np.load(file) as z:
      have_ids, have = z['ids'], z['features']
  known = dict(zip(have_ids.tolist(), range(len(have_ids))))
  missing = np.array([i for i, x in enumerate(ids.tolist()) if x not in known], np.int64)
  if len(missing):
    new = compute(missing)
    have_ids = np.concatenate([have_ids, ids[missing]])
    have = new if have is None else np.concatenate([have, new.astype(have.dtype)])
    _save(file, have_ids, have, key)
    known = dict(zip(have_ids.tolist(), range(len(have_ids))))
  return have[[known[x] for x in ids.tolist()]]


def text_features(model, params, texts, ids, *, cache_dir: str | None, dataset: str, split: str,
                  max_length: int = 128, tokenizer_dir: str | None = None, batch_size: int = 64,
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
