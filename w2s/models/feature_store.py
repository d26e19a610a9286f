"""Where frozen features live on disk: the chunk files of one content key, and which directory.

A cache key (`w2s.models.features`: backbone, checkpoint, params digest, dataset, tokenizer,
view) names one directory, `<cache>/<dataset>-<split>-<hash of key>/`, of chunks `part-*.npz`, each
some example ids and their features. Chunks are written atomically (temp file + rename; the name
hashes the ids, so concurrent writers of the same rows agree) and read as the union by example
id, so runs with different rows, processes writing at once and interrupted extractions all add
up to one cache. An unreadable chunk is deleted with one warning (its rows are computed again);
a temp file a killed writer left is removed after `STALE_TMP_S`.

Which cache (`cache_dirs`, called with the run's `<workdir>/features`), in order of precedence:

* `W2S_CACHE_DIR=<dir>`: `<dir>` (several users or machines can point at one shared disk);
* `W2S_CACHE_DIR=` (set, empty): workdir-local, `<workdir>/features` only (everything a run makes
  stays in its workdir, as before the user cache);
* unset: the user cache `$XDG_CACHE_HOME/w2s/features`, by default `~/.cache/w2s/features`.

With a user cache the workdir's own `features/` (an older version's, or written in workdir-local
mode) is read too, and rows found only there are copied into the user cache rather than
computed. A default user cache that cannot be created or written falls back to the workdir with
one warning; an explicit `W2S_CACHE_DIR` that cannot is an error. Deleting a cache directory
loses nothing but the time to extract again.
"""
import glob
import hashlib
import json
import os
import re
import tempfile
import time

from absl import logging
import numpy as np

from w2s.errors import UserError

CACHE_ENV = 'W2S_CACHE_DIR'  # the user feature cache; set empty for workdir-local (above)
STALE_TMP_S = 24 * 3600  # a writer's temp file this old was left by a killed process: removed
_WARNED: set[str] = set()  # unwritable user caches already warned about (once per process)


def cache_path(cache_dir: str, key: dict) -> str:
  """The chunk directory of `key`: `<cache_dir>/<dataset>-<split>-<hash of key>`."""
  digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
  stem = re.sub(r'[^A-Za-z0-9_.-]+', '_', f'{key.get("dataset", "data")}-{key.get("split", "")}')
  return os.path.join(cache_dir, f'{stem}-{digest}')


def user_cache_dir() -> str | None:
  """The user feature cache from the environment as it is now: `$W2S_CACHE_DIR`, else
  `$XDG_CACHE_HOME/w2s/features` (default `~/.cache/w2s/features`); None when `W2S_CACHE_DIR` is
  set empty (workdir-local mode)."""
  value = os.environ.get(CACHE_ENV)
  if value is None:
    value = os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache'), 'w2s',
                         'features')
  value = value.strip()
  return os.path.abspath(os.path.expanduser(os.path.expandvars(value))) if value else None


def cache_dirs(workdir_cache: str | None) -> tuple[str | None, tuple[str, ...]]:
  """(the directory a run stores features in, directories it also reads) for a run whose own
  feature directory is `workdir_cache` (`<workdir>/features`); precedence in the module
  docstring. The workdir's directory is read only if it exists, and never twice."""
  user = user_cache_dir()
  if user is None:
    return workdir_cache, ()
  if not _writable(user):
    if CACHE_ENV in os.environ:
      raise UserError(f'{CACHE_ENV}={os.environ[CACHE_ENV]} is not a writable directory; point it '
                      f'at one, or set {CACHE_ENV}= (empty) to keep features in the workdir')
    if workdir_cache is not None and user not in _WARNED:
      _WARNED.add(user)
      logging.warning('feature cache %s cannot be written; features are kept in %s (set %s to '
                      'choose another shared cache)', user, workdir_cache, CACHE_ENV)
    return workdir_cache, ()
  if workdir_cache is None or not os.path.isdir(workdir_cache) or _same(workdir_cache, user):
    return user, ()
  return user, (workdir_cache,)


def _writable(folder: str) -> bool:
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError:
    return False
  return os.access(folder, os.W_OK | os.X_OK)


def _same(a: str, b: str) -> bool:
  try:
    return os.path.samefile(a, b)
  except OSError:
    return os.path.realpath(a) == os.path.realpath(b)


def save_chunk(folder: str, ids: np.ndarray, feats: np.ndarray, key: dict) -> None:
  """Writes one chunk atomically; its name hashes its ids, so hosts writing the same chunk agree."""
  os.makedirs(folder, exist_ok=True)
  name = f'part-{hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()[:16]}.npz'
  with tempfile.NamedTemporaryFile(dir=folder, prefix='.', suffix='.tmp', delete=False) as f:
    np.savez(f, ids=ids, features=feats, key=json.dumps(key, sort_keys=True, default=str))
    f.flush()
    os.fsync(f.fileno())
  os.replace(f.name, os.path.join(folder, name))


def remove_stale_tmp(folder: str) -> None:
  """Removes temp files of writers killed mid-chunk (a live writer's are younger)."""
  for tmp in glob.glob(os.path.join(folder, '.*.tmp')):
    try:
      if time.time() - os.path.getmtime(tmp) > STALE_TMP_S:
        os.remove(tmp)
    except OSError:
      pass  # renamed or removed by its writer meanwhile


def read_chunk(file: str) -> tuple[np.ndarray, np.ndarray]:
  with np.load(file) as z:
    ids, feats = np.asarray(z['ids'], np.int64), z['features']
  if ids.ndim != 1 or feats.ndim != 2 or len(ids) != len(feats):
    raise ValueError(f'ids {ids.shape} do not match features {feats.shape}')
  return ids, feats


def load(folder: str) -> tuple[np.ndarray, np.ndarray | None]:
  """(ids [M], features [M, D]) of every readable chunk; unreadable ones are deleted, warned."""
  ids, feats, width = [], [], None
  remove_stale_tmp(folder)
  files = sorted(glob.glob(os.path.join(folder, 'part-*.npz')))
  files += [folder + '.npz'] if os.path.exists(folder + '.npz') else []  # one-file caches of old
  for file in files:
    try:
      i, f = read_chunk(file)
      if width is not None and f.shape[1] != width:
        raise ValueError(f'{f.shape[1]} features per row, other chunks have {width}')
    except FileNotFoundError:
      continue  # replaced by another process meanwhile
    except Exception as e:  # pylint: disable=broad-except  # zip, pickle, dtype errors: recompute
      detail = ' '.join(f'{type(e).__name__}: {e}'.split())
      logging.warning('feature cache chunk %s is unreadable (%s); deleted, its rows are computed '
                      'again', file, detail)
      try:
        os.remove(file)
      except OSError:
        pass
      continue
    width = f.shape[1]
    ids.append(i)
    feats.append(f)
  if not ids:
    return np.zeros((0,), np.int64), None
  return np.concatenate(ids), np.concatenate(feats)


def adopt(folder: str, others: list[str], want: np.ndarray, key: dict, width: int | None):
  """(ids, features) of the examples `want` that the chunk directories `others` hold (first
  found wins), saved into `folder` as one chunk; None if they hold none (or other widths)."""
  want = set(want.tolist())
  parts_ids, parts = [], []
  for other in others:
    o_ids, o = load(other)
    if o is None or (width is not None and o.shape[1] != width):
      continue
    take = np.array([j for j, x in enumerate(o_ids.tolist()) if x in want], np.int64)
    take = take[np.unique(o_ids[take], return_index=True)[1]]  # one row per id
    if len(take):
      width = o.shape[1]
      parts_ids.append(o_ids[take])
      parts.append(o[take])
      want -= set(o_ids[take].tolist())
  if not parts:
    return None
  got_ids, got = np.concatenate(parts_ids), np.concatenate(parts)
  save_chunk(folder, got_ids, got, key)
  return got_ids, got


def index(ids: np.ndarray) -> dict[int, int]:
  """id -> first row holding it (chunks of concurrent writers may overlap)."""
  known = {}
  for j, x in enumerate(ids.tolist()):
    known.setdefault(x, j)
  return known
