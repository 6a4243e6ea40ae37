"""The engine on a busy machine, and one run against a stack, each timed in one run.

Oversubscription.  The same training (``train_stack``, float32, vanilla) is timed quiet,
then beside one competing busy process per core (a pure-Python loop each), for each
backend, in rounds; the slowdown is the median over rounds of busy / quiet.  With T
threads of ours and h busy processes on c cores (T ≤ c) the scheduler's fair share leaves
this run at most c·T/(T + h) cores, so no engine can do better than a slowdown of
(T + h)/c, which is printed beside it (2.00 for 2 threads and 2 busy processes on 2
cores).

One run against a stack.  ns per particle-sample update of one run at N = 1000 and 5000
and of a stack of 12 runs at N = 5000, per backend, through ``train_stack``; one run with
its normal numbers from ``torch.randn`` and from the native generator
(``mfsym.engine.fast_normal``: the same bits), each with its next chunk drawn ahead and
drawn in turn, and its defaults.  Beside them, the draws of one run alone (its stream's
inputs and noise, ``Streams.next_chunk``) per update, both ways: one run draws its own
noise, 4 normal numbers per particle and step, where the runs of a stack share their
seed's, so on two cores one run cannot go below (its kernel's CPU time + its draws) / 2
per update, whatever the overlap.

Both time whole step loops (:func:`loop_time`), median and spread over the repeats.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time

import torch
from bench_engine import CpuShare, engine_runs, loop_config, summarize

from mfsym.engine.blocks import Streams
from mfsym.engine.fast_normal import NORMAL_DRAWS
from mfsym.engine.training import TrainConfig, train_stack


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


def loop_time(runs, N, steps, group, unit, teachers, repeat, threads, draw_ahead=None,
              normal_draws="auto", **cfg_kw):
    """Seconds per step of ``train_stack``'s step loop (its ``wall_time_s``: the steps and
    two snapshots of 16 inputs, no set-up), over ``repeat`` whole runs of ``steps`` steps
    (``draw_ahead``, ``normal_draws``: as in ``train_stack``).

    Whole runs rather than the marginal ``(wall(2k) − wall(k)) / k`` of ``time_engine``:
    with other processes on the cores a difference of two noisy times is noisier still,
    and here the fixed costs are well under 1 % of a run."""
    cfg = loop_config(steps, N, **cfg_kw)
    kw = {"draw_ahead": draw_ahead, "normal_draws": normal_draws}
    train_stack(group, unit, teachers, runs, N, "SI", loop_config(64, N, **cfg_kw),
                **kw)  # warm-up
    samples = []
    with CpuShare(threads) as cpu:
        for _ in range(repeat):
            res = train_stack(group, unit, teachers, runs, N, "SI", cfg, **kw)
            samples.append(res.wall_time_s / steps)
    return summarize(samples, busy=cpu.busy)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def oversubscription(backends, cases, threads, repeat, group, unit, teachers, B,
                     budget=1e9, max_steps=65536):
    """Print quiet and busy ns per update and the slowdown, per backend and (R, N).

    The run is timed in rounds: each round times it quiet, then beside one busy process
    per core, and the slowdown printed is the median over the rounds of that round's
    busy / quiet, with its range.  A machine whose speed drifts from minute to minute
    moves both sides of a round's ratio together, where all quiet measurements first and
    all busy ones after would carry the drift into the ratio.  Each measurement trains
    about ``budget`` particle-sample updates (256 to ``max_steps`` steps): about a second
    quiet, hundreds of the scheduler's time slices, so that one slice more or less does
    not decide a figure."""
    c = cores()
    bound = (threads + c) / c if threads <= c else float("nan")
    print(f"\noversubscription: {threads} thread(s) beside {c} busy process(es) on {c} "
          f"core(s), {repeat} rounds of quiet then busy; fair-share bound on the slowdown "
          f"{bound:.2f}×")
    for R, N in cases:
        steps = int(min(max_steps, max(256, budget // (R * N * B))))
        per_ns = 1e9 / (R * N * B)
        for backend in backends:
            kw = {"backend": backend, "dtype": "float32", "device": "cpu"}
            runs = engine_runs("vanilla", R)
            quiet, busy = [], []
            for _ in range(repeat):
                quiet.append(loop_time(runs, N, steps, group, unit, teachers, 1, threads,
                                       **kw).median * per_ns)
                with BusyCores(c):
                    busy.append(loop_time(runs, N, steps, group, unit, teachers, 1, threads,
                                          **kw).median * per_ns)
            ratios = [b / q for b, q in zip(busy, quiet, strict=True)]
            print(f"  stack {R:>3}, N = {N:>5}, {backend:>10}: quiet {_figure(quiet)}, busy "
                  f"{_figure(busy)} ns per update; slowdown {statistics.median(ratios):.2f}× "
                  f"({min(ratios):.2f}–{max(ratios):.2f} over the rounds)", flush=True)


def one_run_against_a_stack(backends, threads, repeat, group, unit, teachers, B,
                            budget=2e8):
    """Print one run at N = 1000 and 5000 and stack 12 at N = 5000, per backend: one run
    with its normal numbers from ``torch.randn`` and from the native generator
    (``normal_draws`` "torch" and "auto": the same numbers), each drawn in turn and
    drawn ahead; and the draws of one run alone, both ways.

    The cases are timed in rounds, each case once per round, and every ratio is the
    median over the rounds of that round's ratio: a machine whose speed drifts from
    minute to minute moves both sides of a ratio together."""
    print(f"\none run against a stack ({threads} thread(s), vanilla, float32; medians of "
          f"{repeat} rounds):")
    ways = [(False, "torch"), (True, "torch"), (False, "auto"), (True, "auto"),
            (None, "auto")]
    cases = [(12, 5000, None, "auto")] + [(1, N, ahead, draws) for N in (1000, 5000)
                                          for ahead, draws in ways]
    for backend in backends:
        kw = {"backend": backend, "dtype": "float32", "device": "cpu"}
        per_update = {case: [] for case in cases}
        draws = {(N, how): [] for N in (1000, 5000) for how in NORMAL_DRAWS}
        for _ in range(repeat):
            for R, N, ahead, how in cases:
                steps = int(min(4000, max(256, budget // (R * N * B))))
                t = loop_time(engine_runs("vanilla", R), N, steps, group, unit, teachers, 1,
                              threads, draw_ahead=ahead, normal_draws=how, **kw)
                per_update[R, N, ahead, how].append(t.median * 1e9 / (R * N * B))
            for N, how in draws:
                draws[N, how].append(draw_time(N, group, normal_draws=how) * 1e9 / (N * B))
        for (R, N, ahead, how), v in per_update.items():
            print(f"  {backend:>10}: {_case_name(R, N, ahead, how):<48}: {_figure(v)} ns per "
                  "update", flush=True)
        for (N, how), v in draws.items():
            print(f"  {'':>10}  draws of one run alone, N = {N:>5}, {how:>5}: {_figure(v)} ns "
                  "per update")
        stack = per_update[12, 5000, None, "auto"]
        for N in (1000, 5000):
            parts = [f"{_ratio(per_update[1, N, ahead, how], stack):.2f}× "
                     f"{_way_name(ahead, how)}" for ahead, how in ways]
            print(f"  {backend:>10}: one run at N = {N:>5} / stack 12 at N = 5000: "
                  + ", ".join(parts))


def _way_name(ahead, how) -> str:
    turn = {False: "in turn", True: "ahead", None: "default"}[ahead]
    return f"{'torch.randn' if how == 'torch' else 'native'} {turn}"


def _case_name(R, N, ahead, how) -> str:
    if R > 1:
        return f"stack {R:>2}, N = {N:>5}"
    return f"stack  1, N = {N:>5}, {_way_name(ahead, how)}"


def _figure(values) -> str:
    med = statistics.median(values)
    return f"{med:.2f} (±{100 * (max(values) - min(values)) / med:.0f}%)"


def _ratio(a, b) -> float:
    """Median over rounds of a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def draw_time(N, group, chunks=64, normal_draws="auto") -> float:
    """Seconds per step of one stream's draws (``Streams.next_chunk``: the inputs, DA
    indices and noise of a chunk of steps, float32; ``normal_draws`` as in
    ``train_stack``)."""
    cfg = TrainConfig()
    streams = Streams([1], N, cfg, group, torch.device("cpu"), torch.float32,
                      normal_draws=normal_draws)
    streams.next_chunk(cfg.rng_chunk)  # buffers
    t0 = time.perf_counter()
    for _ in range(chunks):
        streams.next_chunk(cfg.rng_chunk)
    wall = time.perf_counter() - t0
    streams.close()
    return wall / (chunks * cfg.rng_chunk)
