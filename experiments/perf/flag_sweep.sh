#!/bin/bash
# Our MiniLM step under XLA flag variants: per-step counters (experiments/perf/step_counters.py).
cd "$(dirname "$0")/../.."
for flags in "" "--xla_cpu_use_onednn=true" "--xla_cpu_experimental_ynn_fusion_type=" "--xla_cpu_use_xnnpack=false" "--xla_cpu_enable_fast_math=true" "$@"; do
  echo "== XLA_FLAGS='$flags'"
  XLA_FLAGS="$flags" W2S_MALLOPT=late .venv/bin/python experiments/perf/step_counters.py --warm 3 --steps 4 2>&1 | grep -E "^(ours|memory|flops)|rror"
done
