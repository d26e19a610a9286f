"""JAX's persistent compilation cache, on by default for the CLI and the tests.

Every `fit` binds its dependencies with `functools.partial` and builds a fresh `jax.jit`, so every
stage, seed and rerun traces and compiles the same train step again. With XLA's executables kept on
disk, a second compile of an identical computation (same HLO, shapes, devices, XLA flags, jaxlib)
is a file read: 2.3x on the ensemble benchmark, and a second `configs/w2s_offline.py:runlocal`
run takes 16 s instead of 26 s on a 2-core CPU (12 entries, 0.6 MB).

Where: `$JAX_COMPILATION_CACHE_DIR` (JAX's own variable) if set, else `default_dir()`.
`W2S_COMPILATION_CACHE=0` turns it off. A directory that cannot be created or written costs one
`warning:` line, and the run goes on without the cache.

`import w2s` does not call `enable`: importing a library should not change the process's global
JAX config. `w2s.main` (the CLI) and tests/conftest.py call it; a notebook may. `w2s.sweep`
workers (`--workers N`) get it through their environment (`child_env`, set by
`w2s.sweep_workers`).

Several processes may share the directory. Under `jax.distributed` only process 0 writes entries
(`jax._src.compiler._cache_write`); independent runs (sweep workers, test subprocesses) may both
write a new key, and JAX never replaces an entry that exists. An entry JAX cannot read (a write
cut short by SIGKILL) is a warning and a fresh compile (`jax_raise_persistent_cache_errors` is off
by default), until the directory is deleted: the cache can cost a recompile, never a wrong result
or a failed run.
"""
import hashlib
import os
import platform
import sys
import tempfile

DISABLE_ENV = 'W2S_COMPILATION_CACHE'
# JAX's default (1 s) skips most CPU train steps of the small models; reading an entry back
# costs milliseconds, so any compile slower than this is worth keeping.
MIN_COMPILE_SECS = 0.2


def requested() -> bool:
  """False when `W2S_COMPILATION_CACHE` is 0 / false / no / off."""
  return os.environ.get(DISABLE_ENV, '').strip().lower() not in ('0', 'false', 'no', 'off')


def default_dir() -> str:
  """`$XDG_CACHE_HOME/w2s/jax/<host cpu>` (or `~/.cache/...`): XLA:CPU executables are built for
  this CPU's features and JAX's key does not include them, so a home directory shared by unlike
  machines would serve entries XLA rejects, and recompiles, on every run."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'w2s', 'jax', _host_cpu())


def _host_cpu() -> str:
  try:
    with open('/proc/cpuinfo') as f:  # x86 'flags', Arm 'Features'
      flags = next((l for l in f if l.startswith(('flags', 'Features'))), '')
  except OSError:
    flags = platform.processor()
  return f'{platform.machine() or "cpu"}-{hashlib.sha256(flags.encode()).hexdigest()[:8]}'


def enable(path: str | None = None) -> str | None:
  """Turns the persistent compilation cache on; call it before the first compile.

  Args:
    path: the cache directory; default `$JAX_COMPILATION_CACHE_DIR`, else `default_dir()`.

  Returns:
    The directory in use, or None when the cache is off (`W2S_COMPILATION_CACHE=0`, or the
    directory cannot be created or written: one `warning:` line on stderr).
  """
  import jax
  path = _usable_dir(path)
  if path is None:
    jax.config.update('jax_enable_compilation_cache', False)  # over JAX's own env variable too
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECS)
  return path


def child_env(path: str | None = None) -> dict[str, str]:
  """The environment variables that give a child process (a `w2s.sweep` worker) the cache
  `enable(path)` would: JAX reads them at import, so the child needs no call of its own.

  Returns {'JAX_COMPILATION_CACHE_DIR': dir, 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': ...}
  (a threshold already in the environment is kept), or {'JAX_ENABLE_COMPILATION_CACHE': 'false'}
  when the cache is off or the directory unusable (one `warning:` line, here, not per child).
  """
  path = _usable_dir(path)
  if path is None:
    return {'JAX_ENABLE_COMPILATION_CACHE': 'false'}
  env = {'JAX_COMPILATION_CACHE_DIR': path}
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = str(MIN_COMPILE_SECS)
  return env


def _usable_dir(path: str | None) -> str | None:
  """The cache directory (created, writable), or None when off or unusable (a warning)."""
  if not requested():
    return None
  path = os.path.abspath(os.path.expanduser(
      path or os.environ.get('JAX_COMPILATION_CACHE_DIR') or default_dir()))
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass  # writable, not just there
  except OSError as e:
    print(f'warning: compilation cache {path} is not usable ({e.strerror or e}); compiling '
          f'without it (set JAX_COMPILATION_CACHE_DIR to a writable directory, or '
          f'{DISABLE_ENV}=0)', file=sys.stderr, flush=True)
    return None  # and JAX off: it would warn on every compile
  return path
