"""The persistent compilation cache: where it goes, how it is turned off, and that it is hit."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from w2s import compile_cache


@pytest.fixture
def updates(monkeypatch):
  """jax.config.update calls of `enable`, recorded instead of applied (the session's cache stays)."""
  calls = {}
  monkeypatch.setattr(jax.config, 'update', lambda name, value: calls.__setitem__(name, value))
  for var in ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS',
              compile_cache.DISABLE_ENV):
    monkeypatch.delenv(var, raising=False)
  return calls


def test_default_dir_is_per_user_and_per_cpu(updates, monkeypatch, tmp_path):
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  path = compile_cache.enable()
  assert os.path.dirname(path) == str(tmp_path / 'xdg' / 'w2s' / 'jax') and os.path.isdir(path)
  assert updates == {'jax_compilation_cache_dir': path,
                     'jax_persistent_cache_min_compile_time_secs': compile_cache.MIN_COMPILE_SECS}


def test_jax_variables_are_respected(updates, monkeypatch, tmp_path):
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'mine'))
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '5')
  assert compile_cache.enable() == str(tmp_path / 'mine')
  assert updates == {'jax_compilation_cache_dir': str(tmp_path / 'mine')}  # the 5 s stays


def test_off_switch_and_unusable_dir(updates, monkeypatch, tmp_path, capsys):
  monkeypatch.setenv(compile_cache.DISABLE_ENV, '0')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'unused'))
  assert compile_cache.enable() is None and not (tmp_path / 'unused').exists()
  assert updates == {'jax_enable_compilation_cache': False}
  monkeypatch.delenv(compile_cache.DISABLE_ENV)
  updates.clear()
  (tmp_path / 'a_file').write_text('in the way')
  assert compile_cache.enable(str(tmp_path / 'a_file' / 'cache')) is None  # no crash
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('warning: compilation cache'), lines
  assert updates == {'jax_enable_compilation_cache': False}


@pytest.mark.skipif(not compile_cache.requested(), reason=f'{compile_cache.DISABLE_ENV}=0')
def test_a_fresh_jit_of_the_same_step_is_a_cache_hit():
  """conftest.py turned the cache on: after the in-memory caches are cleared (as a new process
  or a new `fit` would find them) the same computation is read back, not compiled."""
  assert jax.config.jax_compilation_cache_dir == os.environ['JAX_COMPILATION_CACHE_DIR']
  events = []
  listener = lambda name, **kw: events.append(name)
  jax.monitoring.register_event_listener(listener)
  before = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  try:
    step = lambda w, x: jnp.tanh(x @ w).sum() * 0.123  # a computation no other test compiles
    x, w = jnp.ones((4, 8)), jnp.ones((8, 3))
    first = jax.jit(jax.grad(step))(w, x)
    jax.clear_caches()
    again = jax.jit(jax.grad(step))(w, x)
  finally:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', before)
    jax.monitoring.unregister_event_listener(listener)
  np.testing.assert_array_equal(first, again)
  assert events.count('/jax/compilation_cache/cache_hits') >= 1, events
