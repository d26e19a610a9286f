"""The suite's own XLA flags (tests/xla_test_flags.py): set in this process, passed to the runs the
tests start, and kept from the notebooks' kernels."""
import os

import jax

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
