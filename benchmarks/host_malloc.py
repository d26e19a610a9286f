"""Keep XLA:CPU's per-execution temp buffer in glibc's heap instead of a fresh mmap every call.

(A prototype for w2s/: `enable()` belongs next to `compile_cache.enable()` in the CLI; see
experiments/perf/README.md.)

XLA:CPU allocates each execution's temp buffer (713 MB for the MiniLM train step at [32, 64]) with
posix_memalign on one of its pool threads and frees it at the end. glibc serves any chunk above
the mmap threshold (at most 32 MiB) with a fresh mmap, and a thread arena's heap (64 MiB) cannot
hold such a chunk even with mmap disabled, so every step maps, page-faults (and the kernel zeroes)
all 713 MB, then unmaps it. One arena, no mmap chunks and no trimming make the second and later
steps reuse the same (already faulted) pages.

`enable()` must run before other threads first call malloc (before JAX starts its CPU client and
before torch / OpenBLAS start theirs): glibc fixes each thread's arena at its first allocation.
The environment-variable equivalent, read at process start and robust to import order:
    MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296
"""
import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc malloc.h


def enable() -> bool:
  """Single arena, no mmap chunks, never trimmed (-1); False where libc is not glibc."""
  if platform.system() != 'Linux':
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  ok = mallopt(M_ARENA_MAX, 1) and mallopt(M_MMAP_MAX, 0)
  return bool(ok and mallopt(M_TRIM_THRESHOLD, -1))
