"""The deep settings of PAPER.md §10: the mlp ensemble and the mean-ODE ResNet.

Two stages, each a grid of stacks trained by :func:`mfsym.engine.training.train_stack` with
the four schemes, SI or WI starts, all (teacher, scheme, seed) runs of one size in one
stack (so every scheme starts from its seed's common initial cloud):

* ``mlp`` — the ensemble ``Φ_N(x) = (1/N) Σᵢ W₂,ᵢ act(W₁,ᵢ x)`` for each N of ``sizes``;
* ``resnet`` — the mean-ODE ResNet of each depth L of ``depths`` with M particles per layer
  for each M of ``sizes`` (N = L·M particles; teachers repeat their cloud at every layer).

After training, from the final clouds (per layer l, and pooled over layers as in
:mod:`mfsym.measure.layers`): ``rmd_projected`` = RMD(ν, P_E#ν), ``rmd_symmetrized`` =
RMD(ν, ν^G), ``rmd_between`` = RMD(ν_A, ν_B) per scheme pair, and the final population
risk.  With a floor (:class:`DeepFloor`), each listed (start, teacher, seed) is trained a
second time with the floor's scheme, from the same initial cloud but with random streams of
its own (stream tag ``"baseline"``), in a stack of its own after the size's stack; then
``rmd_baseline`` = RMD(ν, ν') between the two runs, the same-scheme floor of claim 1
(PAPER.md §1), NaN at starts and teachers without a floor.  The dataset has dims
``(init, N, teacher, scheme|pair, seed)`` for ``mlp`` and ``(init, depth, M, teacher,
scheme|pair, seed)`` for ``resnet`` (``rmd_baseline``: neither scheme nor pair), whose
per-layer variables ``*_layer`` add a ``layer`` axis (0 … max L − 1; NaN at layers a
depth does not have).  ``training_dtype`` and ``training_backend`` (init[, depth], size):
strings, what trained each size's stack (under ``dtype: auto`` float64 where the step
α/(L·M) ≥ ``float64_step_min``, float32 elsewhere); their distinct values are also the
dataset attributes of the same names, joined by " | ".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..core.groups import FiniteGroup
from ..core.schemes import INITS, SCHEMES, parse_pair
from ..core.teachers import TEACHER_KINDS, Teacher
from ..core.units import Unit
from ..engine.models import ResNet, repeat_layers
from ..engine.run_inputs import BASELINE_STREAM
from ..engine.training import RunSpec, StackResult, TrainConfig, train_stack
from ..measure.layers import layered_rmd, layered_rmd_to_projected, layered_rmd_to_symmetrized
from ..records.results import variable
from ..records.trained_by import TRAINED_BY, distinct

STAGES = ("mlp", "resnet")
#: The size axis of each stage: N particles (mlp), M particles per layer (resnet).
SIZE_DIM = {"mlp": "N", "resnet": "M"}
#: What each size's stack records of its training (fields of :data:`TRAINED_BY`).
RECORDED = ("dtype", "backend")
QUANTITIES = {
    "rmd_projected": "RMD between the final particles and their projection on E^G",
    "rmd_symmetrized": "RMD between the final particles and their symmetrisation",
}


class DeepError(ValueError):
    """A deep stage's setting is inconsistent; the message names the key."""


@dataclass(frozen=True)
class DeepFloor:
    """The same-scheme floor: ``scheme`` trained twice per (start, teacher, seed) for the
    starts of ``inits`` and the teachers of ``teachers`` that the stage trains."""

    scheme: str
    inits: tuple[str, ...]
    teachers: tuple[str, ...]


@dataclass(frozen=True)
class DeepGrid:
    """What one stage trains: sizes (N or M), depths (resnet; (1,) for mlp), starts,
    teachers, schemes, seeds, the scheme pairs "A-B" compared and the floor (or None)."""

    stage: str
    sizes: tuple[int, ...]
    depths: tuple[int, ...]
    inits: tuple[str, ...]
    teachers: tuple[str, ...]
    schemes: tuple[str, ...]
    seeds: tuple[int, ...]
    pairs: tuple[str, ...]
    floor: DeepFloor | None = None

    def __post_init__(self):
        where = f"deep.{self.stage}"
        _need(self.stage in STAGES, f"deep stage {self.stage!r} is unknown; allowed: {STAGES}")
        for key, allowed in (("inits", INITS), ("teachers", TEACHER_KINDS),
                             ("schemes", SCHEMES)):
            vals = getattr(self, key)
            _need(bool(vals) and set(vals) <= set(allowed) and len(set(vals)) == len(vals),
                  f"{where}.{key} = {list(vals)} is invalid; a non-empty list without repeats "
                  f"from {list(allowed)}")
        for key in ("sizes", "depths", "seeds"):
            vals = getattr(self, key)
            least = 0 if key == "seeds" else 1
            _need(bool(vals) and all(_integer(v, least) for v in vals)
                  and len(set(vals)) == len(vals),
                  f"{where}.{key} = {list(vals)} is invalid; distinct integers ≥ {least}")
        _need(self.stage == "resnet" or tuple(self.depths) == (1,),
              f"{where}: the mlp stage has no depth, got depths {list(self.depths)}")
        for pair in self.pairs:
            missing = [s for s in parse_pair(pair) if s not in self.schemes]
            _need(not missing, f"{where}.pairs: {pair!r} names {missing}, not among the "
                  f"schemes {list(self.schemes)}")
        if self.floor is not None:
            _need(self.floor.scheme in self.schemes,
                  f"deep.baseline.scheme = {self.floor.scheme!r} is not among the schemes "
                  f"{list(self.schemes)}; allowed: one of them, or none")

    def floor_runs(self, init: str) -> tuple[tuple[str, ...], str] | None:
        """(teachers, scheme) of the floor's stack at start ``init``, or None."""
        f = self.floor
        if f is None or init not in f.inits:
            return None
        teachers = tuple(t for t in self.teachers if t in f.teachers)
        return (teachers, f.scheme) if teachers else None

    @property
    def size_dim(self) -> str:
        return SIZE_DIM[self.stage]


def _integer(v, least: int) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= least


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise DeepError(message)


@dataclass(frozen=True)
class DeepProblem:
    """The group (acting on the unit's Z), the unit and the base teacher clouds (K, D)."""

    group: FiniteGroup
    unit: Unit
    teachers: dict[str, Teacher]


def model_for(grid: DeepGrid, unit: Unit, depth: int):
    """The unit itself (mlp stage) or the ResNet of ``depth`` layers of it."""
    return unit if grid.stage == "mlp" else ResNet(unit, depth)


def train_size(problem: DeepProblem, grid: DeepGrid, cfg: TrainConfig, init: str, depth: int,
               size: int, threads: int | None = None, checkpoint_path=None,
               floor: bool = False) -> StackResult:
    """Train every (teacher, scheme, seed) of one (init, depth, size) in one stack; with
    ``floor``, the floor's runs of that cell instead (:meth:`DeepGrid.floor_runs`)."""
    model = model_for(grid, problem.unit, depth)
    teachers = {k: Teacher(k, repeat_layers(problem.teachers[k].particles, depth))
                for k in grid.teachers}
    if floor:
        names, scheme = grid.floor_runs(init)
        runs = [RunSpec(t, scheme, int(seed), stream=BASELINE_STREAM) for t in names
                for seed in grid.seeds]
    else:
        runs = [RunSpec(t, s, int(seed)) for t in grid.teachers for s in grid.schemes
                for seed in grid.seeds]
    label = (f"{grid.stage} init={init} L={depth} {grid.size_dim}={size}"
             + (" floor" if floor else ""))
    return train_stack(problem.group, model, teachers, runs, depth * size, init, cfg,
                       threads=threads, label=label, checkpoint_path=checkpoint_path)


def stack_metrics(res: StackResult, grid: DeepGrid, group: FiniteGroup, depth: int) -> dict:
    """Pooled and per-layer metrics of one trained stack: arrays indexed
    (teacher, scheme|pair, seed[, layer])."""
    T, S, K = len(grid.teachers), len(grid.schemes), len(grid.seeds)
    final = res.final_particles.reshape(T, S, K, depth, -1, group.dim_z)
    p_e = group.reynolds()
    fns = {"rmd_projected": lambda c: layered_rmd_to_projected(c, p_e),
           "rmd_symmetrized": lambda c: layered_rmd_to_symmetrized(c, group)}
    out = {}
    for name, fn in fns.items():
        pooled, layers = np.empty((T, S, K)), np.empty((T, S, K, depth))
        for idx in np.ndindex(T, S, K):
            pooled[idx], layers[idx] = fn(final[idx])
        out[name], out[f"{name}_layer"] = pooled, layers
    pooled, layers = np.empty((T, len(grid.pairs), K)), np.empty((T, len(grid.pairs), K, depth))
    for p, pair in enumerate(grid.pairs):
        a, b = (grid.schemes.index(s) for s in parse_pair(pair))
        for t, k in np.ndindex(T, K):
            pooled[t, p, k], layers[t, p, k] = layered_rmd(final[t, a, k], final[t, b, k])
    out["rmd_between"], out["rmd_between_layer"] = pooled, layers
    out["population_risk"] = res.population_risk[:, -1].reshape(T, S, K)
    return out


def floor_metrics(res: StackResult, twin: StackResult | None, grid: DeepGrid, init: str,
                  depth: int, dim_z: int) -> np.ndarray:
    """``rmd_baseline`` (teacher, seed): the pooled RMD between each floor run of ``twin``
    and the run of the same (teacher, scheme, seed) in ``res``; NaN without a floor."""
    T, S, K = len(grid.teachers), len(grid.schemes), len(grid.seeds)
    out = np.full((T, K), np.nan)
    if twin is None:
        return out
    names, scheme = grid.floor_runs(init)
    final = res.final_particles.reshape(T, S, K, depth, -1, dim_z)
    twins = twin.final_particles.reshape(len(names), K, depth, -1, dim_z)
    s = grid.schemes.index(scheme)
    for j, name in enumerate(names):
        t = grid.teachers.index(name)
        for k in range(K):
            out[t, k] = layered_rmd(final[t, s, k], twins[j, k])[0]
    return out


def run_stage(problem: DeepProblem, grid: DeepGrid, cfg: TrainConfig,
              threads: int | None = None, checkpoint=None) -> xr.Dataset:
    """Train the whole grid of one stage and return its dataset (module docstring).

    ``checkpoint(init, depth, size, part)`` gives each stack's checkpoint path (or None);
    ``part`` is ``""`` for the size's stack and ``"floor"`` for its floor's stack."""
    max_depth = max(grid.depths)
    shape = (len(grid.inits), len(grid.depths), len(grid.sizes))
    cells: dict[str, np.ndarray] = {}
    trained = {key: np.empty(shape, dtype=object) for key in RECORDED}
    for (i, init), (d, depth), (n, size) in _cells(grid):
        def train(part, init=init, depth=depth, size=size):
            path = checkpoint(init, depth, size, part) if checkpoint else None
            return train_size(problem, grid, cfg, init, depth, size, threads, path,
                              floor=part == "floor")
        res = train("")
        twin = train("floor") if grid.floor_runs(init) else None
        for key in RECORDED:
            trained[key][i, d, n] = getattr(res, key)
        metrics = stack_metrics(res, grid, problem.group, depth)
        if grid.floor is not None:
            metrics["rmd_baseline"] = floor_metrics(res, twin, grid, init, depth,
                                                    problem.group.dim_z)
        for name, arr in metrics.items():
            if name.endswith("_layer"):
                padded = np.full((*arr.shape[:-1], max_depth), np.nan)
                padded[..., :depth] = arr
                arr = padded
            cells.setdefault(name, np.empty((*shape, *arr.shape)))[i, d, n] = arr
    return stage_dataset(grid, cells, cfg, trained)


def _cells(grid: DeepGrid):
    for i in enumerate(grid.inits):
        for d in enumerate(grid.depths):
            for n in enumerate(grid.sizes):
                yield i, d, n


def stage_dataset(grid: DeepGrid, cells: dict[str, np.ndarray], cfg: TrainConfig,
                  trained: dict[str, np.ndarray]) -> xr.Dataset:
    """The stage's dataset from ``cells`` (init, depth, size, teacher, scheme|pair, seed
    [, layer]) and ``trained`` (:data:`RECORDED` key → strings (init, depth, size)); the
    mlp stage drops the depth and layer axes."""
    lead = ("init", "depth", grid.size_dim, "teacher")
    long = {**QUANTITIES, "rmd_between": "RMD between the final particles of two schemes",
            "population_risk": "population risk of the trained network"}
    if "rmd_baseline" in cells:
        long["rmd_baseline"] = (f"RMD between two {grid.floor.scheme} runs from one start "
                                "with independent streams (NaN: no floor trained)")
    data = {}
    for name, text in long.items():
        mid = {"rmd_between": ("pair",), "rmd_baseline": ()}.get(name, ("scheme",))
        data[name] = variable((*lead, *mid, "seed"), cells[name], text + " (pooled over layers)"
                              if grid.stage == "resnet" and name != "population_risk" else text)
        if f"{name}_layer" in cells:
            data[f"{name}_layer"] = variable((*lead, *mid, "seed", "layer"),
                                             cells[f"{name}_layer"], text + ", per layer")
    coords = {"init": list(grid.inits), "depth": list(grid.depths),
              grid.size_dim: list(grid.sizes), "teacher": list(grid.teachers),
              "scheme": list(grid.schemes), "pair": list(grid.pairs),
              "seed": list(grid.seeds), "layer": list(range(max(grid.depths)))}
    recorded = {}
    for key in RECORDED:
        values = trained[key].astype(str)
        data[f"training_{key}"] = variable(("init", "depth", grid.size_dim), values,
                                           TRAINED_BY[key])
        recorded[f"training_{key}"] = distinct(values)
    ds = xr.Dataset(data, coords=coords)
    if grid.stage == "mlp":
        ds = ds.isel(depth=0, layer=0, drop=True)
        ds = ds.drop_vars([v for v in ds.data_vars if v.endswith("_layer")])
    ds.attrs.update({"stage": grid.stage, "alpha": cfg.alpha, "T": cfg.T,
                     "da_mode": cfg.da_mode, "quantity": "RMD (not squared)",
                     "baseline": grid.floor.scheme if grid.floor else "", **recorded})
    return ds


def nonfinite_variables(ds: xr.Dataset) -> tuple[str, ...]:
    """Per-layer variables (NaN marks layers a depth does not have) and the floor (NaN
    marks starts and teachers without one)."""
    return tuple(v for v in ds.data_vars if v.endswith("_layer") or v == "rmd_baseline")


def sizes_of(ds: xr.Dataset) -> Sequence[int]:
    """The size axis values (N or M) of a stage dataset."""
    return ds[SIZE_DIM[ds.attrs["stage"]]].values
