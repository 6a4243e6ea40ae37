#!/usr/bin/env bash
# GPU check of the engine, prepared to run as one short job on a machine with one CUDA GPU:
#   1. the CUDA tests (tests/test_device.py and every test named for cuda);
#   2. N = 5000 training on the GPU: a 120-run stack like the paper grid (10 seeds x 3
#      teachers x 4 schemes), a few hundred steps, timed after a warm-up; prints ns per
#      particle-sample update and the projected wall time of the paper grid's training.
# Without a usable CUDA device it says so and exits 0. Budget: well under 8 minutes.
#   bash benchmarks/gpu_check.sh [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-300}"

if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device is available (torch.cuda.is_available() is False); nothing to check."
    exit 0
fi
python3 -c 'import torch; print("gpu_check: device", torch.cuda.get_device_name(0))'

echo "gpu_check: CUDA tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_device.py -k "cuda or gpu"

echo "gpu_check: N = 5000 training on cuda, 120 runs, ${STEPS} steps"
timeout 240 python3 - "$STEPS" <<'PY'
import sys
import time

import torch

from mfsym.core.groups import c2_swap
from mfsym.core.teachers import paper_teachers
from mfsym.core.units import make_unit
from mfsym.engine.training import RunSpec, TrainConfig, train_stack

steps = int(sys.argv[1])
N, B, T_PAPER = 5000, 20, 20.0
GRID_N = (5, 10, 50, 100, 500, 1000, 5000)
unit = make_unit("matrix", 2, 2, "sigmoid")
group = unit.group(c2_swap())
teachers = paper_teachers(group)
runs = [RunSpec(t, s, seed) for t in ("arbitrary", "WI", "SI")
        for s in ("vanilla", "DA", "FA", "EA") for seed in range(10)]


def wall(n_steps: int) -> float:
    cfg = TrainConfig(T=n_steps / N, batch_size=B, n_snapshots=2, n_eval=256,
                      device="cuda", dtype="auto")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = train_stack(group, unit, teachers, runs, N, "SI", cfg)
    torch.cuda.synchronize()
    assert res.device.startswith("cuda"), res.device
    return time.perf_counter() - t0


wall(32)  # warm-up: kernels, allocations
short, long = wall(steps), wall(2 * steps)
per_step = max(long - short, 1e-9) / steps
ns = 1e9 * per_step / (len(runs) * N * B)
print(f"gpu_check: {per_step * 1e3:.3f} ms per step, {ns:.4f} ns per particle-sample update "
      f"({len(runs)} runs, N = {N}, B = {B})")
# the paper grid: both inits, one 120-run stack per (init, N), N*T steps; the time per
# step is taken proportional to N (the GPU is saturated at N = 5000), an upper bound below
total = sum(2 * n * T_PAPER * per_step * max(n / N, 0.0) for n in GRID_N)
print(f"gpu_check: projected paper-grid training (N in {GRID_N}, 2 inits): "
      f"{total:.0f} s = {total / 3600:.2f} h (time per step scaled with N)")
PY
echo "gpu_check: done"
