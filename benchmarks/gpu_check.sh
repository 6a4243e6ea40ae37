#!/usr/bin/env bash
# GPU check of the engine, one short job (under 5 minutes on an H100) for a bare machine
# with one CUDA GPU: python3 with torch (>= 2.4), numpy, xarray, scipy and pytest, the
# working tree, nothing installed from it.
#   1. the CUDA tests (those named for cuda or gpu in tests/test_device.py and
#      tests/test_kernels.py; on a CPU the device tests among them run, the rest skip);
#   2. N = 5000 training on the GPU (benchmarks/gpu_timing.py): a 120-run stack like the
#      paper grid, a few hundred steps, timed after a warm-up; prints ns per particle-sample
#      update and the projected wall time of the paper grid's training.
# Exit status: 0 with "no GPU" when there is none (no nvidia-smi, or it lists none); non-zero
# with the reason when nvidia-smi lists a GPU that torch cannot use, or when a stage fails.
# --cpu-dry-run runs the same stages on the CPU at tiny sizes, whatever the GPU.
#   bash benchmarks/gpu_check.sh [--cpu-dry-run] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DRY=0
if [[ "${1:-}" == "--cpu-dry-run" ]]; then DRY=1; shift; fi
STEPS="${1:-}"

# torch's view: its version, its CUDA build and the device it can use (exit 3: none)
torch_rc=0
torch_info=$(python3 -c 'import sys, torch
ok = torch.cuda.is_available()
dev = f", device {torch.cuda.get_device_name(0)}" if ok else ", no usable CUDA device"
print(f"torch {torch.__version__} (torch.version.cuda {torch.version.cuda}){dev}")
sys.exit(0 if ok else 3)') || torch_rc=$?
if (( torch_rc != 0 && torch_rc != 3 )); then
    echo "gpu_check: FAILED: python3 cannot import torch (exit $torch_rc)" >&2
    exit 1
fi
echo "gpu_check: $torch_info"

if (( DRY )); then
    DEVICE=cpu N=40 WARMUP=4 STEPS=${STEPS:-20}
    echo "gpu_check: --cpu-dry-run: every stage on the CPU at tiny sizes"
elif (( torch_rc == 0 )); then
    DEVICE=cuda N=5000 WARMUP=32 STEPS=${STEPS:-300}
else
    gpu_line=$(nvidia-smi -L 2>/dev/null | grep -m1 '^GPU' || true)
    if [[ -z "$gpu_line" ]]; then
        echo "gpu_check: no GPU (no nvidia-smi, or it lists none); nothing to check."
        exit 0
    fi
    echo "gpu_check: FAILED: nvidia-smi lists a GPU that torch cannot use" >&2
    echo "gpu_check:   nvidia-smi: $gpu_line" >&2
    echo "gpu_check:   $torch_info (a CPU build of torch, or a driver too old for it?)" >&2
    exit 1
fi

echo "gpu_check: CUDA tests"
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 timeout 120 python3 -m pytest -q -p no:cacheprovider \
    -o addopts="" -ra --strict-markers -m "not slow" -k "cuda or gpu" \
    tests/test_device.py tests/test_kernels.py

echo "gpu_check: N = $N training on $DEVICE, 120 runs, $STEPS steps"
timeout 150 python3 benchmarks/gpu_timing.py --device "$DEVICE" --n "$N" \
    --steps "$STEPS" --warmup "$WARMUP"
echo "gpu_check: done"
