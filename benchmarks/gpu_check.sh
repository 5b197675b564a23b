#!/usr/bin/env bash
# Run the GPU check on a CUDA machine and keep its table: bash benchmarks/gpu_check.sh [ARGS]
# (ARGS go to benchmarks/gpu_check.py, e.g. --only embed,scores). Needs the gpu extra
# (faiss-gpu) for the FAISS row to run on the GPU. Prints the table and writes it to
# benchmarks/results/gpu_check-<date>.md; exit status 1 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p benchmarks/results
out="benchmarks/results/gpu_check-$(date +%Y%m%d-%H%M%S).md"
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi: CPU-only run"; } | tee "$out"
"$PYTHON" -c "import faiss; print('faiss', faiss.__version__, 'GPUs seen:', faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0)" | tee -a "$out"
timeout 600 "$PYTHON" benchmarks/gpu_check.py --threads "$(nproc)" "$@" 2>&1 | tee -a "$out"
