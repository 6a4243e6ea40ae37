"""Per-run metrics of one training job (PAPER.md §5), from its run dataset.

For every run (teacher, scheme, seed) with final cloud ν_N (N atoms in R^D):

* ``rmd_projected`` = RMD(ν_N, (P_E)#ν_N), closed form (Brenier: z ↦ P_E z is optimal);
* ``rmd_symmetrized`` = RMD(ν_N, ν_N^G), exact network simplex (N vs |G|·N atoms);
* ``population_risk``: the Monte-Carlo risk at the final time;

and for every scheme pair "A-B" and (teacher, seed): ``rmd_between`` = RMD(ν_A, ν_B),
exact assignment (both have N atoms).  RMD² = W₂²/(M₂(μ) + M₂(ν)), M₂ = 2 E‖z‖², and
RMD = sqrt(RMD²) ∈ [0, 1].  The curves ``risk_curve``, ``train_loss_curve`` and
``rmd_projected_curve`` ``(teacher, scheme, seed, time)`` are carried over from training,
and so are the attributes ``init``, ``N`` and what ran: ``backend``, ``dtype``, ``device``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..core.groups import FiniteGroup
from ..core.schemes import parse_pair
from ..records.results import variable
from .transport import rmd, rmd_to_projected, rmd_to_symmetrized

RUN_DIMS = ("teacher", "scheme", "seed")
CARRIED_ATTRS = ("init", "N", "backend", "dtype", "device")
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


def rmd_between_schemes(final: xr.DataArray, pairs: Sequence[str]) -> np.ndarray:
    """RMD(ν_A, ν_B) ``(teacher, pair, seed)`` for every pair "A-B" of final clouds."""
    out = np.empty((final.sizes["teacher"], len(pairs), final.sizes["seed"]))
    for p, pair in enumerate(pairs):
        a, b = (final.sel(scheme=s).transpose("teacher", "seed", "particle", "coord").values
                for s in parse_pair(pair))
        for t, s in np.ndindex(a.shape[0], a.shape[1]):
            out[t, p, s] = rmd(a[t, s], b[t, s])
    return out


def run_metrics(runs: xr.Dataset, group: FiniteGroup, pairs: Sequence[str]) -> xr.Dataset:
    """The metrics of one run dataset (see the module docstring); ``group`` gives P_E, ν^G."""
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
    data = {
        "rmd_projected": variable(
            RUN_DIMS, _per_run(final, lambda c: rmd_to_projected(c, p_e)),
            "RMD between the final particles and their projection on E^G",
        ),
        "rmd_symmetrized": variable(
            RUN_DIMS, _per_run(final, lambda c: rmd_to_symmetrized(c, group)),
            "RMD between the final particles and their symmetrisation",
        ),
        "population_risk": variable(
            RUN_DIMS, runs["population_risk"].transpose(*RUN_DIMS, "time").values[..., -1],
            "population risk of the trained network",
        ),
        "rmd_between": variable(
            ("teacher", "pair", "seed"), rmd_between_schemes(final, pairs),
            "RMD between the final particles of two schemes",
        ),
    }
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
    return xr.Dataset(data, coords=coords, attrs={k: runs.attrs[k] for k in CARRIED_ATTRS})
