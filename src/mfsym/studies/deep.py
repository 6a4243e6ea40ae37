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
risk.  The dataset has dims ``(init, N, teacher, scheme|pair, seed)`` for ``mlp`` and
``(init, depth, M, teacher, scheme|pair, seed)`` for ``resnet``, whose per-layer variables
``*_layer`` add a ``layer`` axis (0 … max L − 1; NaN at layers a depth does not have).
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
from ..engine.training import RunSpec, StackResult, TrainConfig, train_stack
from ..measure.layers import layered_rmd, layered_rmd_to_projected, layered_rmd_to_symmetrized
from ..records.results import variable

STAGES = ("mlp", "resnet")
#: The size axis of each stage: N particles (mlp), M particles per layer (resnet).
SIZE_DIM = {"mlp": "N", "resnet": "M"}
QUANTITIES = {
    "rmd_projected": "RMD between the final particles and their projection on E^G",
    "rmd_symmetrized": "RMD between the final particles and their symmetrisation",
}


class DeepError(ValueError):
    """A deep stage's setting is inconsistent; the message names the key."""


@dataclass(frozen=True)
class DeepGrid:
    """What one stage trains: sizes (N or M), depths (resnet; (1,) for mlp), starts,
    teachers, schemes, seeds and the scheme pairs "A-B" compared."""

    stage: str
    sizes: tuple[int, ...]
    depths: tuple[int, ...]
    inits: tuple[str, ...]
    teachers: tuple[str, ...]
    schemes: tuple[str, ...]
    seeds: tuple[int, ...]
    pairs: tuple[str, ...]

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
               size: int, threads: int | None = None, checkpoint_path=None) -> StackResult:
    """Train every (teacher, scheme, seed) of one (init, depth, size) in one stack."""
    model = model_for(grid, problem.unit, depth)
    teachers = {k: Teacher(k, repeat_layers(problem.teachers[k].particles, depth))
                for k in grid.teachers}
    runs = [RunSpec(t, s, int(seed)) for t in grid.teachers for s in grid.schemes
            for seed in grid.seeds]
    label = f"{grid.stage} init={init} L={depth} {grid.size_dim}={size}"
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


def run_stage(problem: DeepProblem, grid: DeepGrid, cfg: TrainConfig,
              threads: int | None = None, checkpoint=None) -> xr.Dataset:
    """Train the whole grid of one stage and return its dataset (module docstring).

    ``checkpoint(init, depth, size)`` gives each stack's checkpoint path (or None)."""
    max_depth = max(grid.depths)
    shape = (len(grid.inits), len(grid.depths), len(grid.sizes))
    cells: dict[str, np.ndarray] = {}
    for (i, init), (d, depth), (n, size) in _cells(grid):
        path = checkpoint(init, depth, size) if checkpoint else None
        res = train_size(problem, grid, cfg, init, depth, size, threads, path)
        for name, arr in stack_metrics(res, grid, problem.group, depth).items():
            if name.endswith("_layer"):
                padded = np.full((*arr.shape[:-1], max_depth), np.nan)
                padded[..., :depth] = arr
                arr = padded
            cells.setdefault(name, np.empty((*shape, *arr.shape)))[i, d, n] = arr
    return stage_dataset(grid, cells, cfg)


def _cells(grid: DeepGrid):
    for i in enumerate(grid.inits):
        for d in enumerate(grid.depths):
            for n in enumerate(grid.sizes):
                yield i, d, n


def stage_dataset(grid: DeepGrid, cells: dict[str, np.ndarray], cfg: TrainConfig) -> xr.Dataset:
    """The stage's dataset from ``cells`` (init, depth, size, teacher, scheme|pair, seed
    [, layer]); the mlp stage drops the depth and layer axes."""
    lead = ("init", "depth", grid.size_dim, "teacher")
    long = {**QUANTITIES, "rmd_between": "RMD between the final particles of two schemes",
            "population_risk": "population risk of the trained network"}
    data = {}
    for name, text in long.items():
        mid = "pair" if name == "rmd_between" else "scheme"
        data[name] = variable((*lead, mid, "seed"), cells[name], text + " (pooled over layers)"
                              if grid.stage == "resnet" and name != "population_risk" else text)
        if f"{name}_layer" in cells:
            data[f"{name}_layer"] = variable((*lead, mid, "seed", "layer"),
                                             cells[f"{name}_layer"], text + ", per layer")
    coords = {"init": list(grid.inits), "depth": list(grid.depths),
              grid.size_dim: list(grid.sizes), "teacher": list(grid.teachers),
              "scheme": list(grid.schemes), "pair": list(grid.pairs),
              "seed": list(grid.seeds), "layer": list(range(max(grid.depths)))}
    ds = xr.Dataset(data, coords=coords)
    if grid.stage == "mlp":
        ds = ds.isel(depth=0, layer=0, drop=True)
        ds = ds.drop_vars([v for v in ds.data_vars if v.endswith("_layer")])
    ds.attrs.update({"stage": grid.stage, "alpha": cfg.alpha, "T": cfg.T,
                     "da_mode": cfg.da_mode, "quantity": "RMD (not squared)"})
    return ds


def nonfinite_variables(ds: xr.Dataset) -> tuple[str, ...]:
    """Per-layer variables: NaN marks layers a depth does not have."""
    return tuple(v for v in ds.data_vars if v.endswith("_layer"))


def sizes_of(ds: xr.Dataset) -> Sequence[int]:
    """The size axis values (N or M) of a stage dataset."""
    return ds[SIZE_DIM[ds.attrs["stage"]]].values
