"""ConfigDicts as plain data: what stage keys hash, fingerprints record and --dry_run prints.

A floor below everything that reads configs (options, optim, partition, stages): it imports
nothing of w2s, so any of them can use it without importing each other.
"""
from typing import Any, Mapping


def plain(x: Any) -> Any:
  """ConfigDicts / FrozenConfigDicts / tuples -> plain dicts and lists (JSON-able)."""
  if hasattr(x, 'to_dict'):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {str(k): plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [plain(v) for v in x]
  return x
