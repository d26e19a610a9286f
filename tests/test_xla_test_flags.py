"""The suite's own XLA flags (tests/xla_test_flags.py): set in this process, passed to the runs the
tests start, and kept from the notebooks' kernels."""
import os

import jax
import numpy as np
import pytest

import xla_test_flags


def test_this_process_has_the_codegen_flags_and_eight_devices():
  flags = os.environ['XLA_FLAGS'].split()
  assert set(xla_test_flags.active()) <= set(flags)
  assert '--xla_force_host_platform_device_count=8' in flags
  assert jax.device_count() == 8


def test_subprocess_flags_replace_the_device_count_and_keep_others(monkeypatch):
  monkeypatch.delenv('W2S_TEST_DEFAULT_CODEGEN', raising=False)
  base = '--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=8 ' + xla_test_flags.FLAGS[0]
  assert xla_test_flags.xla_flags(2, base).split() == [
      '--xla_dump_to=/tmp/x', *xla_test_flags.FLAGS, '--xla_force_host_platform_device_count=2']
  assert xla_test_flags.xla_flags().split() == list(xla_test_flags.FLAGS)
  assert xla_test_flags.strip(base) == '--xla_dump_to=/tmp/x'
  monkeypatch.setenv('W2S_TEST_DEFAULT_CODEGEN', '1')
  assert xla_test_flags.xla_flags(1) == '--xla_force_host_platform_device_count=1'


def test_default_codegen_gives_every_jit_xlas_defaults_and_restores_jax_jit(monkeypatch):
  monkeypatch.delenv('W2S_TEST_DEFAULT_CODEGEN', raising=False)
  calls = []
  fake = lambda fun, **kw: calls.append(kw) or fun
  monkeypatch.setattr(jax, 'jit', fake)
  with xla_test_flags.default_codegen():
    assert jax.jit(abs, donate_argnums=0) is abs
    jax.jit(compiler_options={'xla_backend_optimization_level': 1})(abs)
  assert jax.jit is fake
  assert calls == [dict(donate_argnums=0, compiler_options=xla_test_flags.DEFAULT_OPTIONS),
                   dict(compiler_options={**xla_test_flags.DEFAULT_OPTIONS,
                                          'xla_backend_optimization_level': 1})]


@pytest.mark.default_codegen
def test_a_marked_test_compiles_with_the_defaults_and_computes_the_same():
  import jax.numpy as jnp
  x = jnp.linspace(-3.0, 3.0, 64)
  f = lambda v: jnp.tanh(v) * jax.nn.gelu(v) + jnp.exp(-v * v)
  got = jax.jit(f)(x)  # XLA's default codegen here; the rest of the suite's numbers match it
  np.testing.assert_allclose(got, np.tanh(x) * np.asarray(jax.nn.gelu(x)) + np.exp(-np.asarray(x) ** 2),
                             rtol=1e-5, atol=1e-6)
  assert jax.jit.__name__ == 'jit' and jax.jit.__module__ == 'xla_test_flags'
