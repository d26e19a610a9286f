"""Stage outputs in the workdir, keyed by the config that produced them.

A stage (weak supervisor, weak labels, ceiling, student, ...) lives in
`<workdir>/stages/<kind>-<key>/`, where `key` hashes exactly the config parts that determine its
result. The directory holds the stage's checkpoints and metrics while it trains and, once done,
`outputs.npz` (e.g. ids and probabilities) and `done.json`, both written atomically and
`done.json` last. A rerun finds `done.json` and skips the stage; many student runs share one set of
weak labels because their weak stage has the same key; a stage interrupted while training resumes
from its checkpoints.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import re

import jax
import numpy as np

from w2s.errors import UserError
from w2s.plain_data import plain


def key(*parts) -> str:
  """Stable 12-hex-digit hash of JSON-able config parts (ConfigDicts allowed)."""
  text = json.dumps(plain(parts), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def number_stages(stages: list, seed_index: int, num_seeds: int) -> None:
  """Sets each stage's `position` (k, N): its place among the run's stages, one seed's after
  another's, which the progress lines show as `stage k/N` (`metrics.stage`)."""
  for k, st in enumerate(stages, seed_index * len(stages) + 1):
    st.position = (k, num_seeds * len(stages))


class Stage:
  """One stage's directory: `done()` says if it finished, `finish()` records its outputs."""

  def __init__(self, workdir: str, kind: str, *parts, seed: int | None = None):
    self.kind = kind
    self.key = key(kind, *parts)
    # a readable name (role, seed) then the hash; dotted loss paths lose their ':' and '/'
    name = re.sub(r'[^A-Za-z0-9_.-]', '_', kind) + ('' if seed is None else f'-seed{seed}')
    self.dir = os.path.join(workdir, 'stages', f'{name}-{self.key}')
    self.spec = plain(parts)
    self.position = None  # (k, N) among the run's stages: `number_stages`

  @contextlib.contextmanager
  def lock(self):
    """Holds `<dir>/.lock` (an exclusive flock) while a stage trains, so another process of a
    sweep that needs the same stage waits and then finds it done instead of training it too. A
    no-op in a multi-process run, whose processes all run the same stage together."""
    if jax.process_count() > 1:
      yield
      return
    os.makedirs(self.dir, exist_ok=True)
    with open(os.path.join(self.dir, '.lock'), 'w') as f:
      fcntl.flock(f, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(f, fcntl.LOCK_UN)

  def done(self) -> bool:
    return os.path.exists(os.path.join(self.dir, 'done.json'))

  def record(self) -> dict:
    """done.json as written by `finish`; a damaged one is a UserError, like a damaged output."""
    path = os.path.join(self.dir, 'done.json')
    try:
      with open(path) as f:
        record = json.load(f)
    except (OSError, ValueError) as e:  # an emptied or truncated file: JSONDecodeError
      raise self._unreadable(path, e) from e
    if not isinstance(record, dict):
      raise self._unreadable(path, f'a JSON {type(record).__name__}, not the stage record')
    return record

  def outputs(self) -> dict[str, np.ndarray]:
    path = os.path.join(self.dir, 'outputs.npz')
    try:
      with np.load(path) as f:
        return dict(f)
    except Exception as e:  # pylint: disable=broad-except  # BadZipFile, EOFError, OSError, ...
      raise self._unreadable(path, e) from e

  def _unreadable(self, path: str, why) -> UserError:
    why = ' '.join(str(why).split()) or type(why).__name__
    return UserError(f'stage output {path} is unreadable ({why}); delete {self.dir} to recompute '
                     'that stage')

  def finish(self, outputs: dict[str, np.ndarray], record: dict) -> None:
    """Writes outputs.npz then done.json (process 0; both atomic)."""
    if jax.process_index() != 0:
      return
    os.makedirs(self.dir, exist_ok=True)
    tmp = os.path.join(self.dir, f'outputs.tmp.{os.getpid()}.npz')
    np.savez(tmp, **outputs)
    os.replace(tmp, os.path.join(self.dir, 'outputs.npz'))
    tmp = os.path.join(self.dir, f'done.tmp.{os.getpid()}')
    with open(tmp, 'w') as f:
      json.dump({'kind': self.kind, 'key': self.key, 'spec': self.spec, **record}, f, indent=2,
                default=float)
    os.replace(tmp, os.path.join(self.dir, 'done.json'))


def join_by_id(query_ids: np.ndarray, ids: np.ndarray, values: np.ndarray, what: str) -> np.ndarray:
  """values[i] for each query id, matched by example id (never by position)."""
  order = np.argsort(ids)
  pos = np.searchsorted(ids, query_ids, sorter=order)
  pos = np.minimum(pos, len(ids) - 1)
  found = ids[order[pos]] == query_ids
  if not found.all():
    missing = query_ids[~found][:5].tolist()
    raise UserError(f'{what}: no entry for example ids {missing} ({(~found).sum()} missing); the '
                    'stages were produced from different splits: delete the stale stage directory')
  return values[order[pos]]
