"""Generated outputs kept by example id, grown in parts: debate transcripts, weak generations.

A store is a directory `<root>/<family>/<name>-<key>/` of `part-00000.npz`, ... files, each the
outputs of one chunk of examples (an 'id' column and the store's fields, [n, ...] each), written
atomically as the chunk finishes. `get(raw, produce)` returns the rows of `raw`'s ids, producing
only the ids no part holds yet: a preempted generation keeps its finished parts, a rerun
generates the rest, and every stage that needs the same outputs (split seeds, reruns, other
students) reads them instead of generating again. Whatever produces a row must depend only on
the row (its id-derived random keys), never on which other rows share its chunk, so a resumed
store holds exactly what an uninterrupted one would.
"""
import glob
import json
import os
import time
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from w2s import preemption
from w2s.errors import UserError
from w2s.protocols import stages as stages_lib


class ByIdStore:
  """Outputs by example id for one producer (`key_parts` hash what determines them)."""

  def __init__(self, root: str, family: str, name: str, fields: Sequence[str], key_parts,
               spec: Mapping | None = None):
    self.family, self.name, self.fields = family, name, tuple(fields)
    self.key = stages_lib.key(family, *key_parts)
    self.dir = os.path.join(root, family, f'{name}-{self.key}')
    self.spec = dict(spec or {})
    self.generated = 0  # examples produced by this process (a rerun: 0)
    self.seconds = 0.0

  def _parts(self) -> list[str]:
    return sorted(glob.glob(os.path.join(self.dir, 'part-*.npz')))

  def load(self, empty: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray] | None:
    """Every stored row ({'id', *fields}), or `empty` (None by default) when nothing is stored."""
    cols = {k: [] for k in ('id',) + self.fields}
    for path in self._parts():
      try:
        with np.load(path) as f:
          for k in cols:
            cols[k].append(f[k])
      except Exception as e:  # pylint: disable=broad-except  # BadZipFile, KeyError, EOFError
        raise UserError(f'{self.family} part {path} is unreadable ({e}); delete it to produce '
                        'those rows again') from e
    if not cols['id']:
      return None if empty is None else dict(empty)
    return {k: np.concatenate(v) for k, v in cols.items()}

  def get(self, raw: Mapping, produce: Callable[[dict], dict], *, chunk: int,
          empty: Mapping[str, np.ndarray] | None = None,
          what: str | None = None) -> dict[str, np.ndarray]:
    """{'id', *fields} for `raw`'s ids in their order; `produce(sub_raw) -> {'id', *fields}`
    runs on chunks of at most `chunk` missing rows, each saved as one part before the next."""
    what = what or f'{self.family} {self.name}'
    ids = np.asarray(raw['id'], np.int64)
    have = self.load(empty)
    held = have['id'] if have is not None else np.zeros(0, np.int64)
    missing = np.flatnonzero(~np.isin(ids, held))
    if len(missing):
      os.makedirs(self.dir, exist_ok=True)
      if jax.process_index() == 0:
        with open(os.path.join(self.dir, 'spec.json'), 'w') as f:
          json.dump({'key': self.key, **self.spec}, f, indent=2, default=str)
      t0, parts = time.perf_counter(), []
      for start in range(0, len(missing), chunk):
        preemption.check(what, 'finished parts are saved')
        rows = missing[start:start + chunk]
        part = produce({k: np.asarray(v)[rows] for k, v in raw.items()})
        absent = [k for k in ('id',) + self.fields if k not in part]
        if absent:
          raise ValueError(f'{what}: the producer returned no {absent}')
        parts.append({k: part[k] for k in ('id',) + self.fields})
        if jax.process_index() == 0:
          tmp = os.path.join(self.dir, f'part.tmp.{os.getpid()}.npz')
          np.savez(tmp, **parts[-1])
          os.replace(tmp, os.path.join(self.dir, f'part-{len(self._parts()):05d}.npz'))
      self.generated += len(missing)
      self.seconds += time.perf_counter() - t0
      new = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
      have = new if have is None else {k: np.concatenate([have[k], new[k]]) for k in have}
    out = {k: stages_lib.join_by_id(ids, have['id'], have[k], what) for k in self.fields}
    out['id'] = ids
    return out
