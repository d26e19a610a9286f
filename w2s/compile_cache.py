"""JAX's persistent compilation cache, on by default for the CLI and the tests.

Every `fit` binds its dependencies with `functools.partial` and builds a fresh `jax.jit`, so every
stage, seed and rerun traces and compiles the same train step again. With XLA's executables kept on
disk, a second compile of an identical computation (same HLO, shapes, devices, XLA flags, jaxlib)
is a file read: 2.3x on the ensemble benchmark, with no change to the step.

Where: `$JAX_COMPILATION_CACHE_DIR` (JAX's own variable) if set, else `$XDG_CACHE_HOME/w2s/jax`
or `~/.cache/w2s/jax`. `W2S_COMPILATION_CACHE=0` turns it off. A directory that cannot be created
costs one warning line and the run goes on without the cache.

`import w2s` does not call `enable`: importing a library should not change the process's global
JAX config. `w2s.main` (the CLI) and tests/conftest.py call it; a notebook may.

Several processes may share the directory. Under `jax.distributed` only process 0 writes entries
(`jax._src.compiler._cache_write`); independent runs (sweep workers, pytest subprocesses) may write
the same key, and JAX never overwrites an existing entry; a damaged entry is reported by JAX as a
warning and the step is compiled instead (`jax_raise_persistent_cache_errors` is False), so the
cache can cost a recompile but never a wrong or failed run.
"""
import os
import sys
import tempfile

DISABLE_ENV = 'W2S_COMPILATION_CACHE'
# JAX's default (1 s) skips most CPU train steps of the small models; reading an entry back costs
# a few ms, so anything slower than that is worth keeping.
MIN_COMPILE_SECS = 0.2


def default_dir() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'w2s', 'jax')


def enable(path: str | None = None) -> str | None:
  """Turns the persistent compilation cache on, before the first compile; returns its directory.

  Args:
    path: the cache directory; default `$JAX_COMPILATION_CACHE_DIR`, else `default_dir()`.

  Returns:
    The directory in use, or None when the cache is off (`W2S_COMPILATION_CACHE=0`, or the
    directory cannot be created or written: one `warning:` line on stderr).
  """
  import jax
  if os.environ.get(DISABLE_ENV, '').strip().lower() in ('0', 'false', 'no', 'off'):
    jax.config.update('jax_enable_compilation_cache', False)  # also over JAX's own env variable
    return None
  path = os.path.abspath(os.path.expanduser(
      path or os.environ.get('JAX_COMPILATION_CACHE_DIR') or default_dir()))
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass  # writable, not just present
  except OSError as e:
    print(f'warning: compilation cache {path} is not usable ({e.strerror or e}); compiling '
          f'without it (set JAX_COMPILATION_CACHE_DIR to a writable directory, or '
          f'{DISABLE_ENV}=0)', file=sys.stderr, flush=True)
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECS)
  return path
