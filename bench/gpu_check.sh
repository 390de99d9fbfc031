#!/usr/bin/env bash
# One command for a CUDA machine: the CUDA-marked tests, training of both models (fp32 and AMP), video evaluation
# (stream and windows, fp32 and AMP), a 1-process torchrun run, and one table (frames/s, peak memory, CPU-vs-GPU
# box agreement). Stops after 8 minutes. `--cpu` runs every step on the CPU with the small model (tests the script).
#
#   bash bench/gpu_check.sh [--cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda
case "${1:-}" in
  "") ;;
  --cpu) device=cpu ;;
  *) echo "usage: bash bench/gpu_check.sh [--cpu]  (unknown argument: $1)" >&2; exit 2 ;;
esac
if [[ $device == cuda ]] && ! python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); use --cpu for a dry run on the CPU" >&2
  exit 2
fi
limit=480  # the budget on a GPU; the CPU dry run gets longer
[[ $device == cpu ]] && limit=1800
exec timeout "$limit" python -m bench.gpu_check --device "$device"
