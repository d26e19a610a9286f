"""Every test process sees 8 CPU devices, so sharding is tested against 1 device in-process.

Compiles are cached on disk for the session (w2s/compile_cache.py): the same step built by many
tests, and by their CLI subprocesses (they inherit JAX_COMPILATION_CACHE_DIR), compiles once. The
directory is fresh each session, so every run is measured cold and a CLI run a test kills mid-write
cannot leave a torn entry for the next one; export JAX_COMPILATION_CACHE_DIR to keep one across
sessions, or W2S_COMPILATION_CACHE=0 to compile everything.
"""
import os
import shutil
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402

_SESSION_DIRS = []  # the directories this session made (removed at its end)
_FEATURES = 'W2S_TEST_FEATURES_DIR'  # the session's frozen-feature cache, shared by xdist workers


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: end-to-end case that runs in CI; skip locally with -m "not slow"')
  from w2s import compile_cache
  # pytest-xdist workers start after this ran in the controller and inherit its environment,
  # so every worker shares one compilation cache and one feature cache
  if compile_cache.requested() and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    _SESSION_DIRS.append(tempfile.mkdtemp(prefix='w2s-test-jax-cache-'))
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _SESSION_DIRS[-1]
  if _FEATURES not in os.environ:
    _SESSION_DIRS.append(tempfile.mkdtemp(prefix='w2s-test-features-'))
    os.environ[_FEATURES] = _SESSION_DIRS[-1]
  # subprocesses that do not call enable() (the notebook's kernel) read JAX's own variables
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS',
                        str(compile_cache.MIN_COMPILE_SECS))
  compile_cache.enable()


def pytest_unconfigure(config):
  for path in _SESSION_DIRS:
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='session')
def shared_features():
  """One frozen-feature cache for the session (all xdist workers). Its entries are keyed by
  content (backbone architecture, checkpoint, params digest, dataset, tokenizer, view;
  w2s/models/features.py) and written atomically, so a workdir reading it gets the features it
  would have computed, without the forward passes."""
  return os.environ[_FEATURES]


@pytest.fixture
def shared_feature_cache(tmp_path, shared_features):
  """The test's workdir (`tmp_path`) reads and writes the session's feature cache as its
  `features/`; its stages, checkpoints and results stay its own, so what it asserts about them is
  unchanged. Use as `@pytest.mark.usefixtures('shared_feature_cache')`."""
  os.symlink(shared_features, tmp_path / 'features', target_is_directory=True)
