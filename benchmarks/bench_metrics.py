"""Cost of the metrics stage: seconds per exact W₂ problem, old and new solver paths side by
side, and the paper grid's projection.

The metrics job of one training job (PAPER.md §5, ``mfsym.measure.metrics``) solves, per
run file of R = teachers × schemes × seeds runs:

* one N×2N transport problem per run: RMD(ν, ν^G) to the symmetrised cloud;
* one N×N assignment per (teacher, pair, seed): RMD between the clouds of two schemes;
* one N×N assignment per (teacher, seed): the same-scheme baseline (``rmd_baseline``);

(RMD to the projected cloud is a closed form and costs nothing here).  How long a problem
takes depends on its clouds far more than on N, so the problems are drawn in the kinds a
trained job holds (:data:`KINDS`, clouds in R⁴ of the C₂ swap / matrix-unit setting, E^G
the range of its Reynolds projector): clouds near E^G (trained from an SI start on the WI
and SI teachers), clouds gathered in a few tight clusters off E^G (the arbitrary teacher),
clouds on E^G (EA, FA from an SI start), clouds off E^G whose law is nearly invariant
(trained from a WI start); pairs of schemes from a common start with common
random numbers (near-identity coupling), clustered clouds around different points, a cloud
off E^G against one on it (every scheme against EA from a WI start), and the independent-
stream twin of the baseline.  :data:`MIX` gives how many problems of each kind one seed of a
job holds, per start, as counted on trained N = 1000 run files of both starts (each 5×
upsampled to N = 5000 and sorted by the solver's routing).

For each N the script prints, per kind, the median and the range of ``--repeat`` solves on
the old path (the solvers before the sparse network simplex: LAPJVsp on the candidate
graph from 4001 columns, clouds near E^G to the dense simplex, no warm start, no coarse
problem before a dense solve, the certificate checked in 1024-row blocks) and on the new
path, then the projected wall time of the paper grid's metrics jobs (``config/paper.yaml``:
N list, starts, seeds per job) on one core, old against new:
Σ_N Σ_start jobs · seeds_per_job · Σ_kind MIX · t_kind(N).

    python benchmarks/bench_metrics.py              # the grid's N, the projection
    python benchmarks/bench_metrics.py --n 1000 5000 --repeat 5

``--runs`` times every W₂ problem of the metrics job of a trained run file
(``results/runs/<init>/N<N>/<block>.nc``, its first ``--seeds`` seeds) on both paths, one
by one, then as the job solves them (the new path, chained per (teacher, seed) with the
solved problems' potentials as hints, ``mfsym.measure.metrics``), printing the seconds
per kind of problem and per teacher, the slowest problems, and the job's projected time
for all its seeds; ``--upsample F`` first turns every cloud of N atoms
into one of F·N (each atom and F − 1 points on the segments to its nearest neighbours, the
neighbours and fractions shared by the schemes of a (teacher, seed)), which keeps clusters,
near-identity couplings and membership of E^G:

    python benchmarks/bench_metrics.py --runs results/runs/SI/N1000/b0.nc --seeds 1 --upsample 5
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import yaml
from scipy.spatial import cKDTree

import mfsym.measure.assignment as assignment
import mfsym.measure.transport as transport
from mfsym.core.groups import c2_swap
from mfsym.core.schemes import parse_pair
from mfsym.core.units import make_unit
from mfsym.measure.metrics import rmd_chain
from mfsym.measure.transport import rmd, rmd_to_symmetrized

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"
PATHS = ("old", "new")
#: Module settings of the old path (with ``solver="lapjvsp"``); the new path is the default.
OLD_SETTINGS = {"DENSE_UP_TO": 4000, "WARM_FROM": math.inf, "BLOCK": 1024,
                "COARSE_FROM": math.inf}


@contextmanager
def solver_path(name: str):
    """Solve W₂ problems on the ``"old"`` or the ``"new"`` path (see the module docstring)."""
    if name == "new":
        yield
        return
    saved = {k: getattr(assignment, k) for k in OLD_SETTINGS}
    solve = transport.assignment_solve
    for key, value in OLD_SETTINGS.items():
        setattr(assignment, key, value)
    transport.assignment_solve = partial(assignment.assignment_solve, solver="lapjvsp")
    try:
        yield
    finally:
        transport.assignment_solve = solve
        for key, value in saved.items():
            setattr(assignment, key, value)


def c2_group():
    return make_unit("matrix", 2, 2, "sigmoid").group(c2_swap())


def _spread(rng, n, p_e, off):
    """A cloud spread along E^G (scale 0.45) and ``off`` away from it."""
    z = 0.45 * rng.standard_normal((n, 4))
    return z @ p_e + off * (z - z @ p_e) / 0.45


def _clustered(rng, n, centres, width=0.03):
    return centres[rng.integers(0, len(centres), n)] + width * rng.standard_normal((n, 4))


def kind_problem(kind: str, n: int, group, seed: int = 0) -> tuple[np.ndarray, ...]:
    """The clouds of one problem of ``kind`` (:data:`KINDS`) at N = ``n``: (cloud,) for the
    transport to its symmetrisation, (a, b) for an assignment."""
    rng = np.random.default_rng(seed)
    p_e = group.reynolds()
    teacher = 0.5 * rng.standard_normal((5, 4))  # an arbitrary teacher's five particles
    if kind == "to ν^G: near E^G":
        return (_spread(rng, n, p_e, 2e-3),)
    if kind == "to ν^G: clustered, off E^G":
        return (_clustered(rng, n, teacher),)
    if kind == "to ν^G: on E^G":
        return (_spread(rng, n, p_e, 0.0),)
    if kind == "to ν^G: off E^G, invariant law":
        mirrored = np.concatenate([teacher, teacher @ group.z[1].T])
        return (_clustered(rng, n, mirrored, width=0.1),)
    if kind == "pair: near-identity":
        a = _spread(rng, n, p_e, 2e-3)
        return a, a + 2e-3 * rng.standard_normal(a.shape)
    if kind == "pair: clustered, apart":
        return (_clustered(rng, n, teacher),
                _clustered(rng, n, np.concatenate([teacher @ p_e, teacher[:2]])))
    if kind == "pair: off E^G vs on it":
        b = _clustered(rng, n, teacher @ p_e)
        return _clustered(rng, n, teacher), b @ p_e
    if kind == "pair: on E^G, 1e-7 apart":
        a = _spread(rng, n, p_e, 0.0)
        return a, a + 1e-7 * rng.standard_normal(a.shape) @ p_e
    if kind == "baseline twin":
        a = _spread(rng, n, p_e, 2e-3)
        return a, a + 0.06 * rng.standard_normal(a.shape) @ p_e
    raise ValueError(f"unknown kind {kind!r}")


#: Problems per seed of a metrics job (3 teachers, 5 schemes, 6 pairs, one twin per
#: teacher) by start and kind, counted on trained N = 1000 run files (upsampled to 5000).
MIX = {
    "SI": {"to ν^G: near E^G": 4, "to ν^G: clustered, off E^G": 2, "to ν^G: on E^G": 9,
           "to ν^G: off E^G, invariant law": 0,
           "pair: near-identity": 10, "pair: clustered, apart": 5,
           "pair: off E^G vs on it": 0, "pair: on E^G, 1e-7 apart": 3, "baseline twin": 3},
    "WI": {"to ν^G: near E^G": 0, "to ν^G: clustered, off E^G": 1, "to ν^G: on E^G": 3,
           "to ν^G: off E^G, invariant law": 11,
           "pair: near-identity": 6, "pair: clustered, apart": 3,
           "pair: off E^G vs on it": 9, "pair: on E^G, 1e-7 apart": 0, "baseline twin": 3},
}
KINDS = tuple(MIX["SI"])


def solve_problem(clouds_: tuple[np.ndarray, ...], group) -> float:
    return rmd_to_symmetrized(clouds_[0], group) if len(clouds_) == 1 else rmd(*clouds_)


def time_paths(clouds_, group, repeat: int) -> dict[str, list[float]]:
    """Seconds of ``repeat`` solves of one problem on each path, the paths alternating (so a
    change of the machine's load touches both), and the check that both give one RMD."""
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    values = {}
    for _ in range(repeat):
        for name in PATHS:
            with solver_path(name):
                t0 = time.perf_counter()
                values[name] = solve_problem(clouds_, group)
                times[name].append(time.perf_counter() - t0)
    if not math.isclose(values["old"], values["new"], rel_tol=1e-9, abs_tol=1e-12):
        raise AssertionError(f"the paths disagree: RMD {values['old']!r} vs {values['new']!r}")
    return times


def spread(times: list[float]) -> str:
    return f"{statistics.median(times):8.3f} [{min(times):.3f}-{max(times):.3f}]"


def problems_per_job(cfg: dict) -> dict[str, int]:
    """W₂ problems of one metrics job of ``cfg`` (a full block of seeds)."""
    teachers, seeds = len(cfg["teachers"]), int(cfg["seeds_per_job"])
    runs = teachers * len(cfg["schemes"]) * seeds
    return {"sym": runs, "assign": (len(cfg["metrics"]["pairs"]) + 1) * teachers * seeds}


def jobs_per_n(cfg: dict) -> int:
    blocks = -(-len(cfg["seeds"]) // int(cfg["seeds_per_job"]))
    return len(cfg["inits"]) * blocks


def trained_problems(runs, pairs: list[str], seeds: int) -> list[tuple[str, str, tuple]]:
    """The W₂ problems of a metrics job on the first ``seeds`` seeds of a run dataset, as
    (kind, label, (a, b) or (cloud,)) with kind "to ν^G", "pair" or "baseline"."""
    final = runs["final_particles"]
    out = []
    for teacher in runs["teacher"].values:
        for seed in runs["seed"].values[:seeds]:
            cloud = {str(s): final.sel(teacher=teacher, scheme=s, seed=seed).values
                     for s in runs["scheme"].values}
            out += [("to ν^G", f"{teacher} {s} seed {seed}", (c,)) for s, c in cloud.items()]
            for pair in pairs:
                p, q = parse_pair(pair)
                out.append(("pair", f"{teacher} {pair} seed {seed}", (cloud[p], cloud[q])))
            if "baseline_final_particles" in runs:
                twin = runs["baseline_final_particles"].sel(teacher=teacher, seed=seed).values
                base = str(runs.attrs["baseline"])
                out.append(("baseline", f"{teacher} {base} twin seed {seed}",
                            (cloud[base], twin)))
    return out


def upsample(runs, factor: int, seed: int = 0):
    """``runs`` with every cloud of N atoms made one of ``factor``·N (module docstring)."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    dims = ("teacher", "scheme", "seed", "particle", "coord")
    twin_dims = ("teacher", "seed", "particle", "coord")
    clouds_ = runs["final_particles"].transpose(*dims).values
    twins = runs["baseline_final_particles"].transpose(*twin_dims).values \
        if "baseline_final_particles" in runs else None
    n_t, n_sc, n_sd, n, dim = clouds_.shape
    big = np.empty((n_t, n_sc, n_sd, factor * n, dim))
    big_twins = None if twins is None else np.empty((n_t, n_sd, factor * n, dim))
    for t, sd in np.ndindex(n_t, n_sd):
        _, nbr = cKDTree(clouds_[t, 0, sd]).query(clouds_[t, 0, sd], k=factor)
        frac = rng.uniform(0.0, 0.5, (n, factor, 1))
        frac[:, 0] = 0.0

        def grow(c, nbr=nbr, frac=frac):
            return (c[:, None] + frac * (c[nbr] - c[:, None])).reshape(factor * n, dim)

        for sc in range(n_sc):
            big[t, sc, sd] = grow(clouds_[t, sc, sd])
        if twins is not None:
            big_twins[t, sd] = grow(twins[t, sd])
    out = xr.Dataset({"final_particles": (dims, big)},
                     coords={k: runs[k].values for k in ("teacher", "scheme", "seed")},
                     attrs={**runs.attrs, "N": factor * n})
    if big_twins is not None:
        out["baseline_final_particles"] = (twin_dims, big_twins)
    return out


def bench_trained(path: str, cfg: dict, seeds: int, factor: int = 1) -> None:
    """Time every W₂ problem of the metrics job of the run file ``path`` on both paths."""
    import xarray as xr

    from mfsym.pipeline.config import build_group

    group = build_group(cfg["group"], cfg["unit"])
    with xr.open_dataset(path) as runs:
        runs = runs.load()
    if factor > 1:
        runs = upsample(runs, factor)
    seeds = min(seeds, runs.sizes["seed"])
    timed = []
    for kind, label, clouds_ in trained_problems(runs, list(cfg["metrics"]["pairs"]), seeds):
        times = time_paths(clouds_, group, repeat=1)
        timed.append((kind, label, times["old"][0], times["new"][0]))
    print(f"{path}: N = {runs.sizes['particle']}, {seeds} of {runs.sizes['seed']} seeds, "
          f"{len(timed)} problems, seconds old -> new")
    for key in ("kind", "teacher"):
        totals: dict[str, list[float]] = {}
        for kind, label, *t in timed:
            name = kind if key == "kind" else label.split()[0]
            totals[name] = [x + y for x, y in zip(totals.get(name, [0.0, 0.0]), t, strict=True)]
        print("  per " + key + ": "
              + ", ".join(f"{k} {o:.1f} s -> {w:.1f} s" for k, (o, w) in totals.items()))
    for kind, label, old, new in sorted(timed, key=lambda x: -x[3])[:5]:
        print(f"  slow: {kind:8s} {label:36s} {old:7.2f} s -> {new:7.2f} s")
    old, new = (sum(x[i] for x in timed) for i in (2, 3))
    chained = time_chains(runs, list(cfg["metrics"]["pairs"]), seeds, group)
    scale = runs.sizes["seed"] / seeds
    print(f"  total {old:.1f} s -> {new:.1f} s -> chained {chained:.1f} s on one core; the "
          f"job's {runs.sizes['seed']} seeds: {old * scale:.0f} s -> {new * scale:.0f} s -> "
          f"{chained * scale:.0f} s")


def time_chains(runs, pairs: list[str], seeds: int, group) -> float:
    """Seconds of the same problems solved as the metrics job solves them: per (teacher,
    seed) in a chain, each offered the nearest solved problem's potentials
    (``mfsym.measure.metrics.rmd_chain``), the baseline twin alone; the values are
    checked against the problems solved one by one."""
    final = runs["final_particles"]
    schemes = [str(s) for s in runs["scheme"].values]
    t0 = time.perf_counter()
    for teacher in runs["teacher"].values:
        for seed in runs["seed"].values[:seeds]:
            cloud = {s: final.sel(teacher=teacher, scheme=s, seed=seed).values for s in schemes}
            sym = rmd_chain([(c, group.symmetrize(c)) for c in cloud.values()])
            between = rmd_chain([tuple(cloud[s] for s in parse_pair(p)) for p in pairs])
            if "baseline_final_particles" in runs:
                rmd(cloud[str(runs.attrs["baseline"])],
                    runs["baseline_final_particles"].sel(teacher=teacher, seed=seed).values)
            wall = time.perf_counter()
            alone = ([rmd_to_symmetrized(c, group) for c in cloud.values()]
                     + [rmd(*(cloud[s] for s in parse_pair(p))) for p in pairs])
            t0 += time.perf_counter() - wall  # the check is not timed
            if not np.allclose(sym + between, alone, rtol=1e-9, atol=1e-12):
                raise AssertionError(f"chained and alone disagree: {sym + between} vs {alone}")
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--config", default=str(PAPER_CONFIG))
    ap.add_argument("--runs", help="a trained run file: time its metrics job's problems")
    ap.add_argument("--seeds", type=int, default=1, help="with --runs: seeds to time")
    ap.add_argument("--upsample", type=int, default=1,
                    help="with --runs: make every cloud this many times larger first")
    args = ap.parse_args(argv)
    with open(args.config, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
    if args.runs:
        bench_trained(args.runs, cfg, args.seeds, args.upsample)
        return
    group = c2_group()
    per_job, n_jobs = problems_per_job(cfg), jobs_per_n(cfg)
    blocks = n_jobs // len(cfg["inits"])
    grid_n = [int(n) for n in cfg["n_particles"]]
    sizes = sorted(set(args.n) | set(grid_n))
    print(f"median [min-max] seconds of {args.repeat} solves per problem")
    print(f"{'N':>5} {'kind':31s} {'old path':>24s} {'new path':>24s} {'ratio':>6}")
    total = {name: 0.0 for name in PATHS}
    for n in sizes:
        job = {name: 0.0 for name in PATHS}
        for kind in KINDS:
            times = time_paths(kind_problem(kind, n, group), group, args.repeat)
            share = sum(MIX[init][kind] for init in cfg["inits"]) * blocks
            for name in PATHS:
                job[name] += share * int(cfg["seeds_per_job"]) * statistics.median(times[name])
            ratio = statistics.median(times["new"]) / statistics.median(times["old"])
            print(f"{n:>5} {kind:31s} {spread(times['old']):>24s} {spread(times['new']):>24s} "
                  f"{ratio:6.2f}", flush=True)
        if n in grid_n:
            for name in PATHS:
                total[name] += job[name]
        print(f"{n:>5} {'all jobs of this N':31s} {job['old']:>14.1f} s {'':9s}"
              f"{job['new']:>14.1f} s {'':9s}{job['new'] / job['old']:6.2f}", flush=True)
    print(f"paper grid ({Path(args.config).name}): {n_jobs} metrics jobs per N, each "
          f"{per_job['sym']} N×2N and {per_job['assign']} N×N problems; projected on one "
          f"core: old {total['old']:.0f} s = {total['old'] / 3600:.2f} h, new "
          f"{total['new']:.0f} s = {total['new'] / 3600:.2f} h "
          f"({total['new'] / total['old']:.2f} of old)")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
