"""Per-run metrics of one training job (PAPER.md §5), from its run dataset.

For every run (teacher, scheme, seed) with final cloud ν_N (N atoms in R^D):

* ``rmd_projected`` = RMD(ν_N, (P_E)#ν_N), closed form (Brenier: z ↦ P_E z is optimal);
* ``rmd_symmetrized`` = RMD(ν_N, ν_N^G), exact network simplex (N vs |G|·N atoms);
* ``population_risk``: the Monte-Carlo risk at the final time;

and for every scheme pair "A-B" and (teacher, seed): ``rmd_between`` = RMD(ν_A, ν_B),
exact assignment (both have N atoms), and, given the unit and the evaluation sample,
``l2_between`` = ‖Φ̂_A − Φ̂_B‖_{L²(π)}, the Monte-Carlo L² distance on the evaluation sample
between the two trained models, each as its scheme defines it (:func:`scheme_model`: FA
averages over the |G| views, EA uses the projected particles, every other scheme Φ_N).
When the run file holds a baseline (a second run of scheme ``baseline`` per (teacher,
seed) with a random stream of its own, ``mfsym.pipeline.runs``): ``rmd_baseline`` and
``l2_baseline`` ``(teacher, seed)``, the same two distances between that scheme's run and
its twin — the finite-N floor any two runs share.  RMD² = W₂²/(M₂(μ) + M₂(ν)), M₂ = 2 E‖z‖², and
RMD = sqrt(RMD²) ∈ [0, 1].  The curves ``risk_curve``, ``train_loss_curve`` and
``rmd_projected_curve`` ``(teacher, scheme, seed, time)`` are carried over from training,
and so are the attributes ``init``, ``N`` and what ran: ``backend``, ``dtype``, ``device``
(and ``coupling``, ``baseline`` when recorded).

The W₂ problems of a (teacher, seed) are solved in a fixed order, each offered the
optimal potentials of the solved problem whose clouds are nearest its own atom by atom
(schemes trained from one start with common random numbers stay close): where the solver
would go dense, a sparse solve from those potentials is certified instead
(:func:`mfsym.measure.assignment.assignment_solve`; the same guarantee).  The (teacher,
seed) chains are independent; with ``threads > 1`` they are solved on a thread pool (the
solvers release the GIL), so the numbers do not depend on the threading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xarray as xr

from ..core.groups import FiniteGroup
from ..core.schemes import parse_pair, resolve_scheme
from ..core.units import Unit
from ..records.results import variable
from .assignment import mean_nn_sq
from .equivariance import group_average, network
from .transport import rmd, rmd_solve, rmd_to_projected

RUN_DIMS = ("teacher", "scheme", "seed")
CARRIED_ATTRS = ("init", "N", "backend", "dtype", "device")
OPTIONAL_ATTRS = ("coupling", "baseline")


#: A solved problem's potentials are offered to another of its (teacher, seed) when both
#: clouds of the two problems are within this many times the atom spacing (the mean
#: squared nearest-neighbour distance) of each other, atom by atom (measured on trained
#: N = 5000 clouds: 10⁻⁵–10⁻² between schemes of the WI and SI teachers, certified from
#: the hint in one round; 60–270 against the arbitrary teacher's vanilla run).
HINT_NEAR = 1.0


def rmd_chain(problems: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """RMD(a, b) of every ``(a, b)`` of ``problems``, solved in order; each is offered the
    potentials of the solved problem nearest it (both clouds within :data:`HINT_NEAR`
    spacings, mean squared distance atom by atom).  Exact whatever is offered."""
    solved, out = [], []
    for a, b in problems:
        value, v = rmd_solve(a, b, _nearest_hint(solved, a, b))
        out.append(value)
        if v is not None:
            solved.append((a, b, v))
    return out


def _nearest_hint(solved, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """The potentials of the solved ``(a', b', v)`` nearest ``(a, b)``, or None."""
    best, far = None, np.inf
    for a2, b2, v in solved:
        if a2.shape != a.shape or b2.shape != b.shape:
            continue
        d = max(float(((a - a2) ** 2).sum(-1).mean()), float(((b - b2) ** 2).sum(-1).mean()))
        if d < far:
            best, far = v, d
    if best is None:  # the spacing (a k-d tree of a) only when there is a candidate
        return None
    return best if far <= HINT_NEAR * mean_nn_sq(np.asarray(a, dtype=np.float64)) else None


def solve_all(tasks: Sequence[Callable[[], float]], threads: int = 1) -> list[float]:
    """The values of independent problems ``tasks``, in order, on up to ``threads`` threads."""
    tasks = list(tasks)
    if threads <= 1 or len(tasks) <= 1:
        return [t() for t in tasks]
    with ThreadPoolExecutor(max_workers=min(int(threads), len(tasks))) as pool:
        return list(pool.map(lambda t: t(), tasks))


def scheme_model(unit: Unit, group: FiniteGroup, scheme: str, cloud, x) -> np.ndarray:
    """The trained model of ``scheme`` on inputs ``x (S, dx)``, ``(S, dy)`` in float64.

    vanilla, DA (either mode): Φ_N(x) = mean_i σ*(x, θ_i); FA: (1/|G|) Σ_g g⁻¹ Φ_N(g x);
    EA: Φ_N with the projected particles P_E θ_i.
    """
    base, _ = resolve_scheme(scheme, "random")
    theta = np.asarray(cloud, dtype=np.float64)
    if base == "EA":
        theta = theta @ group.reynolds().T
    if base == "FA":  # g⁻¹ = gᵀ (orthogonal representations)
        return group_average(unit, theta, x, group.x, group.y)
    return network(unit, theta, x)


def l2_distance(f: np.ndarray, g: np.ndarray) -> float:
    """Monte-Carlo L²(π) distance ``(mean_s ‖f_s − g_s‖²)^{1/2}`` of outputs ``(S, dy)``."""
    return float(np.sqrt(((f - g) ** 2).sum(-1).mean()))
CURVE_SOURCES = {
    "risk_curve": ("population_risk", "population risk during training"),
    "train_loss_curve": ("train_loss", "training loss during training"),
    "rmd_projected_curve": ("rmd_projected", "RMD to the projection on E^G during training"),
}


def _per_run(final: xr.DataArray, fn) -> np.ndarray:
    """``fn(cloud)`` for every run of ``final`` ``(teacher, scheme, seed, particle, coord)``."""
    arr = final.transpose(*RUN_DIMS, "particle", "coord").values
    out = np.empty(arr.shape[:3])
    for idx in np.ndindex(*arr.shape[:3]):
        out[idx] = fn(arr[idx])
    return out


def rmd_between_schemes(final: xr.DataArray, pairs: Sequence[str], threads: int = 1
                        ) -> np.ndarray:
    """RMD(ν_A, ν_B) ``(teacher, pair, seed)`` for every pair "A-B" of final clouds."""
    out = np.empty((final.sizes["teacher"], len(pairs), final.sizes["seed"]))
    tasks, places = _pair_chains(final, pairs)
    for (t, sd), values in zip(places, solve_all(tasks, threads), strict=True):
        out[t, :, sd] = values
    return out


def _pair_chains(final: xr.DataArray, pairs: Sequence[str]):
    """One task per (teacher, seed): the RMDs of its pairs in order (:func:`rmd_chain`);
    and the (teacher, seed) of each."""
    clouds = {s: final.sel(scheme=s).transpose("teacher", "seed", "particle", "coord").values
              for pair in pairs for s in parse_pair(pair)}
    sides = [parse_pair(pair) for pair in pairs]
    places = list(np.ndindex(final.sizes["teacher"], final.sizes["seed"]))
    tasks = [lambda t=t, sd=sd: rmd_chain([(clouds[x][t, sd], clouds[y][t, sd])
                                           for x, y in sides])
             for t, sd in places]
    return tasks, places


def _models(final: xr.DataArray, unit: Unit, group: FiniteGroup, x_eval) -> dict:
    """Each run's model on ``x_eval``: (teacher, scheme, seed) labels → ``(S, dy)``."""
    out = {}
    for t, sc, sd in np.ndindex(*(final.sizes[d] for d in RUN_DIMS)):
        cloud = final.isel(teacher=t, scheme=sc, seed=sd).transpose("particle", "coord").values
        out[(t, sc, sd)] = scheme_model(unit, group, str(final.scheme.values[sc]), cloud,
                                        x_eval)
    return out


def run_metrics(
    runs: xr.Dataset, group: FiniteGroup, pairs: Sequence[str], unit: Unit | None = None,
    x_eval=None, threads: int = 1,
) -> xr.Dataset:
    """The metrics of one run dataset (see the module docstring); ``group`` gives P_E, ν^G;
    ``unit`` and ``x_eval`` (the evaluation sample, ``(S, dx)``) the L² distances between
    models (omitted when either is None); ``threads``: threads of the W₂ solvers."""
    final = runs["final_particles"]
    missing = sorted({s for p in pairs for s in parse_pair(p)} - set(runs["scheme"].values))
    if missing:
        raise ValueError(
            f"scheme pairs name {missing}, absent from the runs (schemes: "
            f"{list(runs['scheme'].values)})"
        )
    if final.sizes["coord"] != group.dim_z:
        raise ValueError(f"the runs have D={final.sizes['coord']}, the group acts on "
                         f"D={group.dim_z}")
    p_e = group.reynolds()
    clouds = final.transpose(*RUN_DIMS, "particle", "coord").values
    n_t, _, n_sd = clouds.shape[:3]
    sym = np.empty(clouds.shape[:3])
    between = np.empty((n_t, len(pairs), n_sd))
    # every W2 problem of the job in one pool: per (teacher, seed) the chain of transports
    # to ν^G and the chain of pairs, then the baseline twins (below), one at a time
    places = [(sym, (t, slice(None), sd)) for t, sd in np.ndindex(n_t, n_sd)]
    tasks = [lambda c=clouds[t, :, sd]: rmd_chain([(x, group.symmetrize(x)) for x in c])
             for t, sd in np.ndindex(n_t, n_sd)]
    pair_tasks, pair_places = _pair_chains(final, pairs)
    tasks += pair_tasks
    places += [(between, (t, slice(None), sd)) for t, sd in pair_places]
    schemes = [str(s) for s in runs["scheme"].values]
    baseline = str(runs.attrs.get("baseline", ""))
    twin = own = floor = None
    if baseline and "baseline_final_particles" in runs:
        if baseline not in schemes:
            raise ValueError(f"the baseline scheme {baseline!r} is not among the runs' "
                             f"schemes {schemes}")
        twin = runs["baseline_final_particles"].transpose("teacher", "seed", "particle",
                                                           "coord").values
        own = final.sel(scheme=baseline).transpose("teacher", "seed", "particle",
                                                   "coord").values
        floor = np.empty(own.shape[:2])
        places += [(floor, i) for i in np.ndindex(*own.shape[:2])]
        tasks += [lambda a=own[i], b=twin[i]: rmd(a, b) for i in np.ndindex(*own.shape[:2])]
    for (array, index), value in zip(places, solve_all(tasks, threads), strict=True):
        array[index] = value
    data = {
        "rmd_projected": variable(
            RUN_DIMS, _per_run(final, lambda c: rmd_to_projected(c, p_e)),
            "RMD between the final particles and their projection on E^G",
        ),
        "rmd_symmetrized": variable(
            RUN_DIMS, sym,
            "RMD between the final particles and their symmetrisation",
        ),
        "population_risk": variable(
            RUN_DIMS, runs["population_risk"].transpose(*RUN_DIMS, "time").values[..., -1],
            "population risk of the trained network",
        ),
        "rmd_between": variable(
            ("teacher", "pair", "seed"), between,
            "RMD between the final particles of two schemes",
        ),
    }
    models = None
    if unit is not None and x_eval is not None:
        models = _models(final, unit, group, x_eval)
        l2 = np.empty((final.sizes["teacher"], len(pairs), final.sizes["seed"]))
        for t, p, sd in np.ndindex(*l2.shape):
            a, b = (schemes.index(s) for s in parse_pair(pairs[p]))
            l2[t, p, sd] = l2_distance(models[(t, a, sd)], models[(t, b, sd)])
        data["l2_between"] = variable(
            ("teacher", "pair", "seed"), l2,
            "L2(pi) distance between the trained models of two schemes (Monte Carlo)",
        )
    if floor is not None:
        data["rmd_baseline"] = variable(
            ("teacher", "seed"), floor,
            f"RMD between two {baseline} runs from one start with independent streams",
        )
        if models is not None:
            k = schemes.index(baseline)
            l2b = np.empty(own.shape[:2])
            for t, sd in np.ndindex(*l2b.shape):
                twin_model = scheme_model(unit, group, baseline, twin[t, sd], x_eval)
                l2b[t, sd] = l2_distance(models[(t, k, sd)], twin_model)
            data["l2_baseline"] = variable(
                ("teacher", "seed"), l2b,
                f"L2(pi) distance between two {baseline} models with independent streams",
            )
    for name, (source, long_name) in CURVE_SOURCES.items():
        data[name] = variable(
            (*RUN_DIMS, "time"), runs[source].transpose(*RUN_DIMS, "time").values, long_name
        )
    coords = {
        "teacher": runs["teacher"].values,
        "scheme": runs["scheme"].values,
        "seed": runs["seed"].values,
        "pair": list(pairs),
        "time": runs["time"],
    }
    missing = [k for k in CARRIED_ATTRS if k not in runs.attrs]
    if missing:
        raise ValueError(f"the run dataset lacks the attribute(s) {missing}")
    attrs = {k: runs.attrs[k] for k in (*CARRIED_ATTRS, *OPTIONAL_ATTRS) if k in runs.attrs}
    return xr.Dataset(data, coords=coords, attrs=attrs)
