"""Where a result came from: the full config, package versions, git commit, devices, wall time.

`results.json` carries this record so a number in a table can be traced back to the code and the
machine that produced it, months later.
"""
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys

import jax

PACKAGES = ('w2s', 'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy',
            'tensorflow-datasets', 'ml_collections', 'tokenizers')


def versions() -> dict:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def git_commit() -> dict:
  """{'commit', 'dirty'} of the checkout w2s runs from, or {} outside a git checkout."""
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(['git', '-C', here, 'rev-parse', 'HEAD'], capture_output=True,
                            text=True, timeout=5, check=True).stdout.strip()
    status = subprocess.run(['git', '-C', here, 'status', '--porcelain', '--untracked-files=no'],
                            capture_output=True, text=True, timeout=5, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return {}
  return {'commit': commit, 'dirty': bool(status.strip())}


def devices() -> dict:
  devs = jax.devices()
  return {'platform': devs[0].platform, 'kind': devs[0].device_kind, 'count': len(devs),
          'processes': jax.process_count(), 'host': platform.node()}


def record(config, *, wall_s: float) -> dict:
  """The provenance entry of a run's results.json."""
  return {'config': config.to_dict() if hasattr(config, 'to_dict') else dict(config),
          'versions': versions(), 'git': git_commit(), 'devices': devices(),
          'python': sys.version.split()[0], 'command': sys.argv,
          'finished': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
          'wall_seconds': round(wall_s, 2)}
