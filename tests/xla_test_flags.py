"""The XLA flags of every test process and of the runs the tests start: cheap compiles.

About three quarters of the suite's time went to XLA:CPU compiling tiny models' train steps
(`experiments/perf/suite_durations.md`, part 4), not to running them. Two codegen flags cut that:
LLVM at -O0 (`--xla_backend_optimization_level=0`; XLA's HLO passes are unchanged) and the
elemental IR emitters instead of the MLIR fusion emitters (`--xla_cpu_use_fusion_emitters=false`).
Together they compiled the sharding / SSL / CNN checks 5x faster; alone, -O0 gave 1.9x and the
emitter switch nothing. They change how XLA's kernels are generated, not what they compute
(float rounding aside; every cross-process comparison in the suite runs under the same flags).

Compute-bound work is slower under them (MiniLM feature extraction: 99 against 169 rows/s), so
the notebooks' kernels drop them (`strip`) and run as a user's would. `W2S_TEST_DEFAULT_CODEGEN=1`
runs the whole suite with XLA's default codegen instead.
"""
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
  kept = [f for f in base.split() if not f.startswith(_DEVICES) and f not in FLAGS]
  extra = [f'{_DEVICES}={devices}'] if devices else []
  return ' '.join([*kept, *active(), *extra])


def strip(flags: str) -> str:
  """`flags` without the fake device count and the test codegen flags: a user's process."""
  return ' '.join(f for f in flags.split() if not f.startswith(_DEVICES) and f not in FLAGS)
