"""Time a paper-grid-like training stack; the timing stage of benchmarks/gpu_check.sh.

A 120-run stack (10 seeds x 3 teachers x 4 schemes) at N particles, B = 20, timed after a
warm-up as the difference between a run of 2*steps and one of steps steps; prints ns per
particle-sample update and, on a GPU, the projected wall time of the paper grid's training.
Imports only torch, numpy and the engine, so it runs on a bare GPU machine.

    python3 benchmarks/gpu_timing.py --device cuda --n 5000 --steps 300
"""

from __future__ import annotations

import argparse
import time

import torch

from mfsym.core.groups import c2_swap
from mfsym.core.teachers import paper_teachers
from mfsym.core.units import make_unit
from mfsym.engine.training import RunSpec, TrainConfig, train_stack

B, T_PAPER = 20, 20.0
GRID_N = (5, 10, 50, 100, 500, 1000, 5000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--n", type=int, default=5000, help="particles per run")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=32, help="steps of the untimed first run")
    args = ap.parse_args()

    unit = make_unit("matrix", 2, 2, "sigmoid")
    group = unit.group(c2_swap())
    teachers = paper_teachers(group)
    runs = [RunSpec(t, s, seed) for t in ("arbitrary", "WI", "SI")
            for s in ("vanilla", "DA", "FA", "EA") for seed in range(10)]
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def wall(n_steps: int) -> float:
        cfg = TrainConfig(T=n_steps / args.n, batch_size=B, n_snapshots=2, n_eval=256,
                          device=args.device, dtype="auto")
        sync()
        t0 = time.perf_counter()
        res = train_stack(group, unit, teachers, runs, args.n, "SI", cfg)
        sync()
        assert res.device.startswith(args.device), res.device
        return time.perf_counter() - t0

    wall(args.warmup)  # kernels, allocations
    short, long = wall(args.steps), wall(2 * args.steps)
    per_step = max(long - short, 0.0) / args.steps
    ns = 1e9 * per_step / (len(runs) * args.n * B)
    noise = "" if long > short else f" (unreliable: {2 * args.steps} steps took no longer)"
    print(f"gpu_check: {per_step * 1e3:.3f} ms per step, {ns:.4f} ns per particle-sample "
          f"update ({len(runs)} runs, N = {args.n}, B = {B}, {args.device}){noise}")
    if args.device == "cuda":
        # the paper grid: both inits, one 120-run stack per (init, N), N*T steps; the time
        # per step is taken proportional to N (the GPU is saturated at N = 5000), an upper
        # bound below that
        total = sum(2 * n * T_PAPER * per_step * n / args.n for n in GRID_N)
        print(f"gpu_check: projected paper-grid training (N in {GRID_N}, 2 inits): "
              f"{total:.0f} s = {total / 3600:.2f} h (time per step scaled with N)")


if __name__ == "__main__":
    main()
