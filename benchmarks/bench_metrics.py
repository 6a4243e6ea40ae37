"""Cost of the metrics stage: seconds per exact W₂ problem, and the paper grid's projection.

The metrics job of one training job (PAPER.md §5, ``mfsym.measure.metrics``) solves, per
run file of R = teachers × schemes × seeds runs:

* one N×2N transport problem per run: RMD(ν, ν^G) to the symmetrised cloud;
* one N×N assignment per (teacher, pair, seed): RMD between the clouds of two schemes;
* one N×N assignment per (teacher, seed): the same-scheme baseline (``rmd_baseline``);

(RMD to the projected cloud is a closed form and costs nothing here).  Clouds are drawn
like trained ones: i.i.d. N(0, 0.25²) entries in R⁴ and, for the assignment, a second cloud
that is the first plus a small perturbation (two schemes from a common start end close).

For each N the script prints the median seconds of one assignment and one transport to
the symmetrised cloud (``--repeat`` solves), then the projected wall time of the metrics
jobs of the paper grid (``config/paper.yaml``: N list, seeds per job, teachers, schemes,
pairs) on one core: Σ_jobs (runs·t_sym(N) + (pairs + 1)·teachers·seeds·t_assign(N)).

    python benchmarks/bench_metrics.py              # N = 1000 and 5000, and the projection
    python benchmarks/bench_metrics.py --n 100 500  # other sizes

Random clouds are not trained ones: trained clouds of the arbitrary teacher gather in a few
tight clusters, and the clouds of two schemes around different points, which is where exact
solvers are slowest. ``--runs`` times every W₂ problem of the metrics job of a trained run
file (``results/runs/<init>/N<N>/<block>.nc``, its first ``--seeds`` seeds), printing the
seconds per kind of problem and per teacher, the slowest problems, and the job's projected
time for all its seeds:

    python benchmarks/bench_metrics.py --runs results/runs/SI/N5000/b0.nc --seeds 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import yaml

from mfsym.core.groups import c2_swap
from mfsym.core.schemes import parse_pair
from mfsym.core.units import make_unit
from mfsym.measure.transport import rmd, rmd_to_symmetrized

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"


def clouds(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = 0.25 * rng.standard_normal((n, 4))
    return a, a + 0.05 * rng.standard_normal((n, 4))


def time_solver(fn, repeat: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def bench_trained(path: str, cfg: dict, seeds: int) -> None:
    """Time every W₂ problem of the metrics job of the run file ``path``."""
    import xarray as xr

    from mfsym.pipeline.config import build_group

    group = build_group(cfg["group"], cfg["unit"])
    with xr.open_dataset(path) as runs:
        runs = runs.load()
    seeds = min(seeds, runs.sizes["seed"])
    timed = []
    for kind, label, clouds_ in trained_problems(runs, list(cfg["metrics"]["pairs"]), seeds):
        t0 = time.perf_counter()
        if kind == "to ν^G":
            rmd_to_symmetrized(clouds_[0], group)
        else:
            rmd(*clouds_)
        timed.append((kind, label, time.perf_counter() - t0))
    print(f"{path}: N = {runs.sizes['particle']}, {seeds} of {runs.sizes['seed']} seeds, "
          f"{len(timed)} problems")
    for key in ("kind", "teacher"):
        totals: dict[str, float] = {}
        for kind, label, t in timed:
            name = kind if key == "kind" else label.split()[0]
            totals[name] = totals.get(name, 0.0) + t
        print("  per " + key + ": " + ", ".join(f"{k} {v:.1f} s" for k, v in totals.items()))
    for kind, label, t in sorted(timed, key=lambda x: -x[2])[:5]:
        print(f"  slow: {kind:8s} {label:36s} {t:7.2f} s")
    spent = sum(t for *_, t in timed)
    print(f"  total {spent:.1f} s on one core; the job's {runs.sizes['seed']} seeds: "
          f"{spent * runs.sizes['seed'] / seeds:.0f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--config", default=str(PAPER_CONFIG))
    ap.add_argument("--runs", help="a trained run file: time its metrics job's problems")
    ap.add_argument("--seeds", type=int, default=1, help="with --runs: seeds to time")
    args = ap.parse_args(argv)
    if args.runs:
        with open(args.config, encoding="utf-8") as fh:
            bench_trained(args.runs, yaml.safe_load(fh), args.seeds)
        return
    group = make_unit("matrix", 2, 2, "sigmoid").group(c2_swap())
    with open(args.config, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    per_job, n_jobs = problems_per_job(cfg), jobs_per_n(cfg)
    grid_n = [int(n) for n in cfg["n_particles"]]
    sizes = sorted(set(args.n) | set(grid_n))
    print(f"{'N':>6} {'assign N×N (s)':>15} {'to ν^G N×2N (s)':>16} {'job (s)':>10}")
    total = 0.0
    for n in sizes:
        a, b = clouds(n)
        reps = args.repeat if n <= 1000 else max(1, min(args.repeat, 2))
        t_assign = time_solver(lambda a=a, b=b: rmd(a, b), reps)
        t_sym = time_solver(lambda a=a: rmd_to_symmetrized(a, group), reps)
        job = per_job["sym"] * t_sym + per_job["assign"] * t_assign
        if n in grid_n:
            total += n_jobs * job
        print(f"{n:>6} {t_assign:>15.4g} {t_sym:>16.4g} {job:>10.4g}", flush=True)
    print(f"paper grid ({Path(args.config).name}): {n_jobs} metrics jobs per N, each "
          f"{per_job['sym']} N×2N and {per_job['assign']} N×N problems; projected "
          f"{total:.0f} s = {total / 3600:.2f} h on one core")


if __name__ == "__main__":
    main()
