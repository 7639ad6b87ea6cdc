#!/usr/bin/env bash
# The first-GPU-run check (scripts/gpu_check.py): a table of what works on this device, JSON in bench-results/.
#   bash scripts/gpu_check.sh                  # CUDA, full sizes, under 8 minutes on one GPU
#   bash scripts/gpu_check.sh --device cpu --quick
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
exec python scripts/gpu_check.py "$@"
