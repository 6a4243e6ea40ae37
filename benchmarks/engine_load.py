"""The engine on a busy machine, and one run against a stack, each timed in one run.

Oversubscription.  The same training (``train_stack``, float32, vanilla) is timed quiet,
then beside one competing busy process per core (a pure-Python loop each), for each
backend; the slowdown is busy / quiet.  With T threads of ours and h busy processes on c
cores (T ≤ c) the scheduler's fair share leaves this run at most c·T/(T + h) cores, so no
engine can do better than a slowdown of (T + h)/c, which is printed beside it (2.00 for
2 threads and 2 busy processes on 2 cores).

One run against a stack.  ns per particle-sample update of one run at N = 1000 and 5000
and of a stack of 12 runs at N = 5000, per backend, through ``train_stack``.

Both time whole step loops (:func:`loop_time`), median and spread over the repeats.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from bench_engine import CpuShare, cell, engine_runs, loop_config, summarize

from mfsym.engine.training import train_stack


def _spin(stop) -> None:  # pragma: no cover - runs in a child process
    while not stop.is_set():
        pass


class BusyCores:
    """Context manager: ``n`` child processes, each keeping one core busy."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.procs = [ctx.Process(target=_spin, args=(self.stop,), daemon=True)
                      for _ in range(self.n)]
        for p in self.procs:
            p.start()
        time.sleep(0.5)  # let them reach their loops
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def loop_time(runs, N, steps, group, unit, teachers, repeat, threads, **cfg_kw):
    """Seconds per step of ``train_stack``'s step loop (its ``wall_time_s``: the steps and
    two snapshots of 16 inputs, no set-up), over ``repeat`` whole runs of ``steps`` steps.

    Whole runs rather than the marginal ``(wall(2k) − wall(k)) / k`` of ``time_engine``:
    with other processes on the cores a difference of two noisy times is noisier still,
    and here the fixed costs are well under 1 % of a run."""
    cfg = loop_config(steps, N, **cfg_kw)
    train_stack(group, unit, teachers, runs, N, "SI", loop_config(64, N, **cfg_kw))  # warm-up
    samples = []
    with CpuShare(threads) as cpu:
        for _ in range(repeat):
            res = train_stack(group, unit, teachers, runs, N, "SI", cfg)
            samples.append(res.wall_time_s / steps)
    return summarize(samples, busy=cpu.busy)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def oversubscription(backends, cases, threads, repeat, group, unit, teachers, B,
                     budget=2e8):
    """Print quiet and busy ns per update and the slowdown, per backend and (R, N); each
    measurement runs about ``budget`` updates (256 to 4096 steps)."""
    c = cores()
    bound = (threads + c) / c if threads <= c else float("nan")
    print(f"\noversubscription: {threads} thread(s) beside {c} busy process(es) on {c} "
          f"core(s); fair-share bound on the slowdown {bound:.2f}×")
    for R, N in cases:
        steps = int(min(4096, max(256, budget // (R * N * B))))
        for backend in backends:
            kw = {"backend": backend, "dtype": "float32", "device": "cpu"}
            runs = engine_runs("vanilla", R)
            quiet = loop_time(runs, N, steps, group, unit, teachers, repeat, threads, **kw)
            with BusyCores(c):
                busy = loop_time(runs, N, steps, group, unit, teachers, repeat, threads, **kw)
            print(f"  stack {R:>3}, N = {N:>5}, {backend:>10}: quiet "
                  f"{cell(quiet, R * N * B)}, busy {cell(busy, R * N * B)} ns per update; "
                  f"slowdown {busy.median / quiet.median:.2f}×", flush=True)


def one_run_against_a_stack(backends, threads, repeat, group, unit, teachers, B,
                            budget=2e8):
    """Print one run at N = 1000 and 5000 and stack 12 at N = 5000, per backend."""
    print(f"\none run against a stack ({threads} thread(s), vanilla, float32):")
    for backend in backends:
        kw = {"backend": backend, "dtype": "float32", "device": "cpu"}
        got = {}
        for R, N in ((1, 1000), (1, 5000), (12, 5000)):
            steps = int(min(4000, max(256, budget // (R * N * B))))
            t = loop_time(engine_runs("vanilla", R), N, steps, group, unit, teachers,
                          repeat, threads, **kw)
            got[R, N] = t.ns_per_update(R * N * B)
            print(f"  {backend:>10}: stack {R:>2}, N = {N:>5}: {cell(t, R * N * B)} ns per "
                  "update", flush=True)
        print(f"  {backend:>10}: one run at N = 1000 / stack 12 at N = 5000 = "
              f"{got[1, 1000] / got[12, 5000]:.2f}×; at N = 5000: "
              f"{got[1, 5000] / got[12, 5000]:.2f}×")
