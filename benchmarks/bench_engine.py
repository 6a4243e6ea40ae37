"""Speed of the training engine against a straightforward batched PyTorch step.

Unit of measure: nanoseconds per particle-sample update, i.e. the wall time of one step
divided by runs × N × B.  B is the minibatch size for every scheme: the |G|·B views that
FA and orbit-averaged DA evaluate count as B samples, so their figure includes the
extra views (the same definition for all schemes).

Engine: :func:`mfsym.engine.training.train_stack`; the time per step is the marginal wall time
of its step loop (data and noise draws, views and targets, the fused step, loss
bookkeeping), i.e. (wall(2k steps) − wall(k steps)) / k, after a warm-up call.  A stack
of R runs of one scheme is the paper's three teachers over ⌈R/3⌉ seeds (runs of a seed
share their samples and noise).

Baseline: the C₂ / 2×2 sigmoid matrix unit written directly below, batched over runs,
forces by autograd of the scheme's loss, fresh samples and noise per run every step.

Every figure is the median of ``--repeat`` measurements with their spread (max − min, in
percent of the median).  A marginal time that comes out non-positive (the longer run was
not slower: noise on a busy machine) is replaced by the plain time per step of the longer
run, an upper bound, and marked ``†``.  A measurement during which this process got less
than 85 % of the CPU time its threads could use (another process was running) is marked
``*``: such figures say more about the machine's load than about the engine.

Finally the wall time of the paper's full grid (PAPER.md §6: N ∈ {5, …, 5000}, 10 seeds,
3 teachers, 4 schemes, 2 initialisations, N·T steps each) is extrapolated from one stack
of 120 runs (10 seeds × 3 teachers × 4 schemes) per N.

The table times every backend of ``--backends`` (default: the step kernel ``native`` and
the first kernel ``native-v1``) in the same run.  Further sections (``--sections``):
``floor`` (the kernel against this CPU's floor, ``engine_floor.py``), ``single`` (one run
against a stack) and ``load`` (the slowdown beside one busy process per core), both in
``engine_load.py``, and ``grid`` (the paper grid's extrapolated training time).

    python benchmarks/bench_engine.py            # everything (about 20 minutes)
    python benchmarks/bench_engine.py --quick    # a short look
    python benchmarks/bench_engine.py --sections floor single load
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mfsym.core.groups import c2_swap
from mfsym.core.schemes import SCHEMES
from mfsym.core.teachers import paper_teachers
from mfsym.core.units import make_unit
from mfsym.engine.training import RunSpec, TrainConfig, train_stack

GRID_N = (5, 10, 50, 100, 500, 1000, 5000)
SECTIONS = ("table", "floor", "single", "load", "grid")
TEACHERS = ("arbitrary", "WI", "SI")


# ---------------------------------------------------------------------------------------
# the baseline: a plain batched step, written from PAPER.md §4
# ---------------------------------------------------------------------------------------
class Baseline:
    """Straightforward eager noisy SGD for R runs of one scheme (C₂, 2×2 sigmoid unit)."""

    def __init__(self, scheme, R, N, cfg: TrainConfig, group, teachers):
        self.scheme, self.R, self.N, self.cfg = scheme, R, N, cfg
        t = [teachers[TEACHERS[i % 3]].particles for i in range(R)]
        k = max(len(p) for p in t)
        self.t = torch.zeros(R, k, 4)
        self.w = torch.zeros(R, k)
        for i, p in enumerate(t):
            self.t[i, : len(p)] = torch.as_tensor(p, dtype=torch.float32)
            self.w[i, : len(p)] = 1.0 / len(p)
        self.g = torch.tensor(group.x, dtype=torch.float32)  # (|G|, 2, 2), = action on Y
        self.P = torch.tensor(group.reynolds(), dtype=torch.float32)
        self.theta = 0.25 * torch.randn(R, N, 4) @ self.P
        self.gen = torch.Generator().manual_seed(0)

    @staticmethod
    def net(z, x):
        """Φ(x) = mean_n sigmoid(z_n x): z (R, N, 4), x (R, S, 2) → (R, S, 2)."""
        return torch.sigmoid(torch.einsum("rnkl,rsl->rsnk", z.reshape(*z.shape[:2], 2, 2), x))

    def loss(self, theta, x, y, g):
        s = self.scheme
        if s == "EA":
            theta = theta @ self.P
        if s == "DA":
            x = torch.einsum("rbij,rbj->rbi", self.g[g], x)
            y = torch.einsum("rbij,rbj->rbi", self.g[g], y)
        if s == "FA":
            views = torch.einsum("gij,rbj->rgbi", self.g, x).reshape(self.R, -1, 2)
            out = self.net(theta, views).mean(2).reshape(self.R, len(self.g), -1, 2)
            pred = torch.einsum("gji,rgbj->rbi", self.g, out) / len(self.g)
        else:
            pred = self.net(theta, x).mean(2)
        return ((pred - y) ** 2).sum(-1).mean(-1).sum()

    def step(self):
        cfg, R, N, B = self.cfg, self.R, self.N, self.cfg.batch_size
        x = cfg.input_std * torch.randn(R, B, 2, generator=self.gen)
        g = torch.randint(0, len(self.g), (R, B), generator=self.gen)
        xi = torch.randn(R, N, 4, generator=self.gen)
        with torch.no_grad():
            y = torch.einsum("rbkd,rk->rbd", self.net(self.t, x), self.w)
        theta = self.theta.requires_grad_(True)
        (grad,) = torch.autograd.grad(self.loss(theta, x, y, g), theta)
        with torch.no_grad():
            drift = N * grad + 2 * cfg.tau * self.theta  # mean-field scaling: force = N ∇
            if self.scheme == "EA":
                drift = drift @ self.P
            noise = xi @ self.P  # SI start: noise on E^G
            lr = cfg.alpha / N
            self.theta = self.theta.detach() - lr * drift + math.sqrt(2 * lr * cfg.beta) * noise


@dataclass(frozen=True)
class Timing:
    """Seconds per step: the median of the repeats, their spread (max − min) / median,
    and flags: ``upper_bound`` (a marginal time fell back to the plain time per step),
    ``busy`` (other processes used the machine meanwhile, see :class:`CpuShare`)."""

    median: float
    spread: float
    upper_bound: bool = False
    busy: bool = False

    def ns_per_update(self, updates: int) -> float:
        return 1e9 * self.median / updates

    def marks(self) -> str:
        return ("†" if self.upper_bound else "") + ("*" if self.busy else "")


#: A measurement is flagged as taken under load when other processes used more than this
#: share of the machine's cores meanwhile (or, without /proc/stat, when this process got
#: under BUSY_SHARE of its threads' CPU time).
OTHERS_SHARE = 0.10
BUSY_SHARE = 0.85


def marginal_time(short: float, long: float, k: int) -> tuple[float, bool]:
    """``(wall(2k) − wall(k)) / k``, or ``wall(2k) / 2k`` flagged when that is not positive."""
    if k < 1 or short <= 0 or long <= 0:
        raise ValueError(f"need k ≥ 1 and positive wall times, got k={k}, {short}, {long}")
    diff = (long - short) / k
    return (diff, False) if diff > 0 else (long / (2 * k), True)


def summarize(samples: list[float], upper_bound: bool = False, busy: bool = False) -> Timing:
    """Median and relative spread of positive per-step times."""
    if not samples or min(samples) <= 0:
        raise ValueError(f"per-step times must be positive, got {samples}")
    med = statistics.median(samples)
    return Timing(med, (max(samples) - min(samples)) / med, upper_bound, busy)


def machine_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have used (Linux ``/proc/stat``: user,
    nice, system, irq, softirq and steal), or None where that cannot be read."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / ticks


class CpuShare:
    """Context manager telling whether other processes used the machine meanwhile: the
    CPU time of the whole machine (``/proc/stat``) minus this process's, over the wall
    time times the cores, above :data:`OTHERS_SHARE` marks the measurement busy.  (This
    process's own share says nothing: its kernel threads sleep when idle.)  Where
    ``/proc/stat`` is missing: this process got under :data:`BUSY_SHARE` of ``threads``
    CPUs."""

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self.share = 1.0
        self.others = 0.0

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.machine = machine_cpu_seconds()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        if wall > 0:
            self.share = cpu / (wall * self.threads)
            end = machine_cpu_seconds()
            if self.machine is not None and end is not None:
                cores = os.cpu_count() or 1
                self.others = max(0.0, (end - self.machine - cpu) / (wall * cores))
            else:
                self.others = None

    @property
    def busy(self) -> bool:
        if self.others is None:
            return self.share < BUSY_SHARE
        return self.others > OTHERS_SHARE


def time_baseline(scheme, R, N, steps, group, teachers, repeat=3, threads=1) -> Timing:
    """Seconds per step of the baseline (after two warm-up steps) over ``repeat`` runs."""
    return time_steps(Baseline(scheme, R, N, TrainConfig(), group, teachers), steps, repeat,
                      threads)


def time_steps(b, steps, repeat=3, threads=1) -> Timing:
    """Seconds per ``b.step()`` (after two warm-up steps) over ``repeat`` runs."""
    for _ in range(2):
        b.step()
    samples = []
    with CpuShare(threads) as cpu:
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(steps):
                b.step()
            samples.append((time.perf_counter() - t0) / steps)
    return summarize(samples, busy=cpu.busy)


# ---------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------
def engine_runs(scheme, R):
    return [RunSpec(TEACHERS[i % 3], scheme, i // 3) for i in range(R)]


def loop_config(n_steps: int, N: int, **cfg_kw) -> TrainConfig:
    """A timed training: ``n_steps`` steps at N, two snapshots of 16 inputs, no divergence
    checks or progress lines inside the loop."""
    return TrainConfig(T=n_steps / N, n_snapshots=2, n_eval=16, check_every=10**9,
                       log_every_s=1e9, **cfg_kw)


def time_engine(runs, N, steps, group, unit, teachers, repeat=3, threads=1,
                **cfg_kw) -> Timing:
    """Seconds per step of ``train_stack`` in its step loop over ``repeat`` measurements.

    Each measurement is the marginal cost (wall(2k steps) − wall(k steps)) / k, with k a
    multiple of the random-number chunk: the two snapshots and other fixed costs cancel
    (see :func:`marginal_time` for the non-positive case).
    """
    chunk = TrainConfig().rng_chunk
    k = max(chunk, -(-steps // chunk) * chunk)

    def wall(n_steps):
        cfg = loop_config(n_steps, N, **cfg_kw)
        return train_stack(group, unit, teachers, runs, N, "SI", cfg).wall_time_s

    wall(4)  # warm-up: kernel build or load, allocations
    samples, bounded = [], False
    with CpuShare(threads) as cpu:
        for _ in range(repeat):
            value, fallback = marginal_time(wall(k), wall(2 * k), k)
            samples.append(value)
            bounded |= fallback
    return summarize(samples, upper_bound=bounded, busy=cpu.busy)


def steps_for(R, N, B, budget_updates, lo=3, hi=2000) -> int:
    return int(min(hi, max(lo, budget_updates // (R * N * B))))


def cell(timing: Timing, updates: int) -> str:
    """``ns per update (±spread %)`` and the flags of a :class:`Timing`."""
    return (f"{timing.ns_per_update(updates):.2f} (±{100 * timing.spread:.0f}%)"
            f"{timing.marks()}")


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N ∈ {100, 1000}, stacks 1 and 12")
    ap.add_argument("--N", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--stacks", type=int, nargs="+", default=[1, 12, 120])
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES) + ["DA-orbit"])
    ap.add_argument("--steps", type=int, default=0, help="steps per measurement (0: auto)")
    ap.add_argument("--budget", type=float, default=3e8,
                    help="particle-sample updates per measurement when --steps is 0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3,
                    help="measurements per figure (median and spread are printed)")
    ap.add_argument("--backends", nargs="+", default=["native", "native-v1"],
                    help="backends timed side by side (the ratio is baseline / the first)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-grid", action="store_true", help="same as leaving out section grid")
    args = ap.parse_args(argv)
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # the section modules lie beside this file
        sys.path.insert(0, here)
    import engine_floor  # they use this module's timing helpers
    import engine_load

    if args.quick:
        args.N, args.stacks, args.budget = [100, 1000], [1, 12], 5e7
    if args.no_grid and "grid" in args.sections:
        args.sections.remove("grid")
    torch.set_num_threads(args.threads)
    unit = make_unit("matrix", 2, 2, "sigmoid")
    group = unit.group(c2_swap())
    teachers = paper_teachers(group)
    B = TrainConfig().batch_size
    print(f"torch {torch.__version__}, {args.threads} thread(s), backends "
          f"{' '.join(args.backends)}, dtype={args.dtype}, B={B}; load average {load()}")
    if "table" in args.sections:
        table(args, group, unit, teachers, B)
    if "floor" in args.sections:
        engine_floor.report(args.threads, repeat=max(args.repeat, 3))
    if "single" in args.sections:
        engine_load.one_run_against_a_stack(args.backends, args.threads, args.repeat, group,
                                            unit, teachers, B)
    if "load" in args.sections:
        engine_load.oversubscription(args.backends, ((12, 5000), (1, 1000)), args.threads,
                                     args.repeat, group, unit, teachers, B)
    if "grid" in args.sections:
        kw = {"backend": args.backends[0], "dtype": args.dtype, "device": "cpu"}
        grid(args, group, unit, teachers, kw, B)
    print(f"load average at the end {load()}")


def table(args, group, unit, teachers, B):
    """ns per update of each backend and of the baseline, per (N, stack, scheme)."""
    print("ns per particle-sample update = time per step / (runs × N × B); FA and orbit-DA "
          "evaluate |G|·B views, counted as B samples.")
    heads = " ".join(f"{b + ' ns (spread)':>21}" for b in args.backends)
    print(f"{'N':>5} {'stack':>5} {'scheme':>8} {'steps':>6} {heads} "
          f"{'baseline ns (spread)':>21} {'ratio':>7}")
    for N in args.N:
        for R in args.stacks:
            for scheme in args.schemes:
                steps = args.steps or steps_for(R, N, B, args.budget)
                name, extra = (scheme, {}) if scheme != "DA-orbit" else ("DA", {"da_mode": "orbit"})
                line = f"{N:>5} {R:>5} {scheme:>8} {steps:>6}"
                first = None
                for backend in args.backends:
                    eng = time_engine(
                        engine_runs(name, R), N, steps, group, unit, teachers, args.repeat,
                        args.threads, backend=backend, dtype=args.dtype, device="cpu", **extra,
                    )
                    first = first or eng
                    line += f" {cell(eng, R * N * B):>21}"
                if not args.no_baseline and scheme in SCHEMES:
                    base = time_baseline(scheme, R, N, steps, group, teachers, args.repeat,
                                         args.threads)
                    line += (f" {cell(base, R * N * B):>21}"
                             f" {base.median / first.median:>7.2f}")
                print(line, flush=True)
    print("† upper bound (the marginal time was not positive); * taken under load (other "
          f"processes used over {OTHERS_SHARE:.0%} of the machine's cores meanwhile)")


def grid(args, group, unit, teachers, kw, B):
    """Extrapolated wall time of PAPER.md §6's grid from one 120-run stack per N."""
    T = TrainConfig().T
    runs = [RunSpec(t, s, seed) for seed in range(10) for t in TEACHERS for s in SCHEMES]
    total = 0.0
    print(f"\nfull grid (10 seeds × 3 teachers × 4 schemes = {len(runs)} runs per stack, "
          "× 2 initialisations, N·T steps, T = 20):")
    for N in GRID_N:
        steps = args.steps or steps_for(len(runs), N, B, args.budget / 4, lo=3, hi=400)
        timing = time_engine(runs, N, steps, group, unit, teachers, args.repeat,
                             args.threads, **kw)
        n_steps = round(N * T)
        contrib = 2 * n_steps * timing.median
        total += contrib
        print(f"  N={N:>5}: {1e3 * timing.median:9.3f} ms per step "
              f"({cell(timing, len(runs) * N * B)} ns per update) × "
              f"{n_steps} steps × 2 inits = {contrib:9.1f} s", flush=True)
    print(f"  extrapolated total: {total:.0f} s = {total / 3600:.2f} h on this machine")


if __name__ == "__main__":
    main()
