"""Every test process sees 8 CPU devices, so sharding is tested against 1 device in-process.

Frozen-backbone features go to one fresh feature cache for the session, the user cache of every
test and of its CLI subprocesses (W2S_CACHE_DIR, inherited), so no test writes to ~/.cache and
the tiny BERT's features of a row are extracted once per session; a test that needs to see an
extraction takes `own_feature_cache`.

Compiles are cached on disk for the session (w2s/compile_cache.py): the same step built by many
tests, and by their CLI subprocesses (they inherit JAX_COMPILATION_CACHE_DIR), compiles once. The
directory is fresh each session, so every run is measured cold and a CLI run a test kills mid-write
cannot leave a torn entry for the next one; export JAX_COMPILATION_CACHE_DIR to keep one across
sessions, or W2S_COMPILATION_CACHE=0 to compile everything.

Every test process, and every run a test starts, compiles with cheap codegen flags
(tests/xla_test_flags.py; W2S_TEST_DEFAULT_CODEGEN=1 for XLA's defaults); the notebooks do not.
"""
import contextlib
import os
import shutil
import tempfile

import xla_test_flags  # tests/xla_test_flags.py: cheap compiles

os.environ['XLA_FLAGS'] = xla_test_flags.xla_flags(8, os.environ.get('XLA_FLAGS', ''))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402

_SESSION_DIRS = []  # the directories this session made (removed at its end)
_FEATURES = 'W2S_TEST_FEATURES_DIR'  # the session's frozen-feature cache, shared by xdist workers
_USER_CACHE = 'W2S_CACHE_DIR'  # w2s.models.feature_store.CACHE_ENV: the cache runs use


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: end-to-end case that runs in CI; skip locally with -m "not slow"')
  config.addinivalue_line('markers', 'default_codegen: compute-bound in-process case; the programs it '
                          'jits compile with XLA\'s default codegen (tests/xla_test_flags.py)')
  from w2s import compile_cache
  # pytest-xdist workers start after this ran in the controller and inherit its environment,
  # so every worker shares one compilation cache and one feature cache
  if compile_cache.requested() and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    _SESSION_DIRS.append(tempfile.mkdtemp(prefix='w2s-test-jax-cache-'))
    os.environ['JAX_COMPILATION_CACHE_DIR'] = _SESSION_DIRS[-1]
  if _FEATURES not in os.environ:
    _SESSION_DIRS.append(tempfile.mkdtemp(prefix='w2s-test-features-'))
    os.environ[_FEATURES] = _SESSION_DIRS[-1]
  # whatever the developer's environment says: tests never read or write a real user cache
  os.environ[_USER_CACHE] = os.environ[_FEATURES]
  # subprocesses that do not call enable() (the notebook's kernel) read JAX's own variables
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS',
                        str(compile_cache.MIN_COMPILE_SECS))
  compile_cache.enable()


def pytest_unconfigure(config):
  for path in _SESSION_DIRS:
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _codegen_of_the_marked(request):
  """`@pytest.mark.default_codegen`: the test's own jits compile with XLA's defaults."""
  marked = request.node.get_closest_marker('default_codegen') is not None
  with xla_test_flags.default_codegen() if marked else contextlib.nullcontext():
    yield


@pytest.fixture(scope='session')
def shared_features():
  """The session's frozen-feature cache (all xdist workers), every run's user cache
  (W2S_CACHE_DIR). Its entries are keyed by content (backbone architecture, checkpoint, params
  digest, dataset, tokenizer, view; w2s/models/features.py) and written atomically, so a workdir
  reading it gets the features it would have computed, without the forward passes."""
  return os.environ[_FEATURES]


@pytest.fixture
def shared_feature_cache(shared_features, monkeypatch):
  """Says that a test's runs read and fill the session's feature cache (its workdir's stages,
  checkpoints and results stay its own). Every test does unless it takes `own_feature_cache`;
  this fixture only makes sure of it. Use as `@pytest.mark.usefixtures('shared_feature_cache')`."""
  monkeypatch.setenv(_USER_CACHE, shared_features)


@pytest.fixture
def own_feature_cache(tmp_path_factory, monkeypatch):
  """A fresh, empty user feature cache for this test alone (so it sees every extraction)."""
  path = str(tmp_path_factory.mktemp('feature-cache'))
  monkeypatch.setenv(_USER_CACHE, path)
  return path
