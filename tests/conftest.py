"""Every test process sees 8 CPU devices, so sharding is tested against 1 device in-process."""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: end-to-end case that runs in CI; skip locally with -m "not slow"')
