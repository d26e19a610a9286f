"""The XLA flags of every test process and of the runs the tests start: cheap compiles.

About three quarters of the suite's time went to XLA:CPU compiling tiny models' train steps
(`experiments/perf/suite_durations.md`, part 4), not to running them. Two codegen flags cut that:
LLVM at -O0 (`--xla_backend_optimization_level=0`; XLA's HLO passes are unchanged) and the
elemental IR emitters instead of the MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`).
Together they compiled the sharding / SSL / CNN checks 5x faster; alone, -O0 gave 1.9x and the
emitter switch nothing. They change how XLA's kernels are generated, not what they compute
(float rounding aside; every cross-process comparison in the suite runs under the same flags).

Compute-bound work is slower under them (MiniLM feature extraction: 99 against 169 rows/s; a
`cnn:small` step 6x), so the notebooks' kernels drop them (`strip`) and run as a user's would, and
a test marked `@pytest.mark.default_codegen` (conftest) compiles the programs it builds through
`jax.jit` with XLA's defaults again (`default_codegen`: per-program options override XLA_FLAGS).
`W2S_TEST_DEFAULT_CODEGEN=1` runs the whole suite with XLA's default codegen instead.
"""
import contextlib
import os

FLAGS = ('--xla_backend_optimization_level=0', '--xla_cpu_use_fusion_emitters=false')
_DEVICES = '--xla_force_host_platform_device_count'


def active() -> tuple[str, ...]:
  """FLAGS, or none under W2S_TEST_DEFAULT_CODEGEN=1."""
  off = os.environ.get('W2S_TEST_DEFAULT_CODEGEN', '').strip().lower() in ('1', 'true', 'yes', 'on')
  return () if off else FLAGS


def xla_flags(devices: int | None = None, base: str = '') -> str:
  """`base` (other XLA flags) with the test codegen flags, and `devices` fake CPU devices when
  given: the XLA_FLAGS value for a test's subprocess."""
  extra = [f'{_DEVICES}={devices}'] if devices else []
  return ' '.join([*strip(base).split(), *active(), *extra])


def strip(flags: str) -> str:
  """`flags` without the fake device count and the test codegen flags: a user's process."""
  return ' '.join(f for f in flags.split() if not f.startswith(_DEVICES) and f not in FLAGS)


# XLA:CPU's own defaults as per-program options (checked: under FLAGS, a cnn:small train step built
# with these compiles and runs as fast as with no flags at all: 0.92 s and 9.0 ms)
DEFAULT_OPTIONS = {'xla_backend_optimization_level': 2, 'xla_cpu_use_fusion_emitters': True}


@contextlib.contextmanager
def default_codegen():
  """Within it, every `jax.jit(...)` call compiles with DEFAULT_OPTIONS (a program's own
  `compiler_options` win). Programs jitted at import time (module-level decorators) keep FLAGS."""
  import jax
  if not active():
    yield
    return
  real = jax.jit

  def jit(fun=None, /, **kw):
    kw['compiler_options'] = {**DEFAULT_OPTIONS, **(kw.get('compiler_options') or {})}
    return real(fun, **kw) if fun is not None else (lambda f: real(f, **kw))

  jax.jit = jit
  try:
    yield
  finally:
    jax.jit = real
