#!/usr/bin/env bash
# Every benchmark, one after the other (about 2 hours on 2 shared CPU cores). From the repo root:
#   bash benchmarks/run_all.sh
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-.venv/bin/python}
$PY benchmarks/tune_baselines.py --out benchmarks/
$PY benchmarks/compare_methods.py --out benchmarks/
$PY benchmarks/scaling.py --parts forget retain model --out benchmarks/
$PY benchmarks/scaling.py --parts memory --out benchmarks/
$PY benchmarks/gpu_estimate.py --scaling benchmarks/scaling.json --out benchmarks/
