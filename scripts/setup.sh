#!/usr/bin/env bash
# Create ./.venv with activevlm and its pinned dependencies (CPU FAISS, dev tools, Ray).
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if command -v uv >/dev/null 2>&1; then
    UV=(uv)
else
    "$PY" -m uv --version >/dev/null 2>&1 || "$PY" -m pip install --quiet uv \
        || "$PY" -m pip install --quiet --user uv
    UV=("$PY" -m uv)
fi
[ -x .venv/bin/python ] || "${UV[@]}" venv --quiet --python "$PY" .venv
# PyPI's CUDA builds of torch/torchvision run on CPU machines too (there is no CPU torchvision
# wheel); bytecode is compiled at install because PYTHONDONTWRITEBYTECODE may be set.
"${UV[@]}" pip install --quiet --python .venv/bin/python --compile-bytecode \
    -c requirements/constraints.txt -e ".[cpu,dev,ray]"
# Label Studio for the end-to-end labelling test, in its own environment (never fatal here).
bash scripts/setup_labelstudio.sh \
    || echo "warning: Label Studio could not be installed; its end-to-end test will skip" >&2
