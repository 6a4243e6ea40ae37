"""The inputs every training job shares, as result datasets (PAPER.md §3–4).

* teachers: one variable ``particles_<kind>`` of shape ``(atom_<kind>, coord)`` per teacher
  (the clouds have different sizes, so each has its own atom dimension), and the basis
  ``fixed_basis`` ``(coord, fixed_dim)`` of E^G;
* evaluation sample: ``x_eval`` ``(sample, x_dim)``, the fixed Monte-Carlo sample of the
  population risk, x ~ N(0, σ² I);
* initial particles: ``initial_particles`` ``(seed, particle, coord)`` for one (init, N):
  i.i.d. N(0, init_std²) entries (WI), projected on E^G (SI); every teacher and scheme of a
  (N, seed, init) starts from this same cloud (EA from its projection).

Each ``*_dataset`` function builds the dataset from plain config sections; the readers
turn a dataset back into what :func:`mfsym.engine.training.train_stack` takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from ..core.teachers import TEACHER_PREFIX
from ..engine.run_inputs import evaluation_inputs, initial_particles
from ..records.results import variable
from .config import build_group, build_teachers


def teacher_dataset(
    group_cfg: Mapping, unit_cfg: Mapping, kinds: Sequence[str], data_cfg: Mapping
) -> xr.Dataset:
    """The teacher clouds of ``kinds`` as ``particles_<kind>`` ``(atom_<kind>, coord)``, and
    ``fixed_basis`` ``(coord, fixed_dim)``: an orthonormal basis of E^G (for readers that draw
    or measure against E^G without rebuilding the group)."""
    group = build_group(group_cfg, unit_cfg)
    teachers = build_teachers(group, kinds, data_cfg)
    data = {
        f"{TEACHER_PREFIX}{kind}": variable(
            (f"atom_{kind}", "coord"), t.particles, f"atoms of the {kind} teacher cloud"
        )
        for kind, t in teachers.items()
    }
    basis = group.fixed_basis()
    data["fixed_basis"] = variable(
        ("coord", "fixed_dim"), basis, "orthonormal basis of the fixed subspace E^G"
    )
    coords = {"coord": np.arange(group.dim_z)}
    attrs = {"group": group.name, "unit": unit_cfg["name"], "teachers": " ".join(teachers)}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def evaluation_dataset(group_cfg: Mapping, training_cfg: Mapping) -> xr.Dataset:
    """The fixed risk sample ``x_eval`` ``(sample, x_dim)`` (``n_eval`` draws, ``eval_seed``)."""
    x = evaluation_inputs(
        int(training_cfg["n_eval"]), int(group_cfg["dim"]),
        float(training_cfg["input_std"]), int(training_cfg["eval_seed"]),
    )
    return xr.Dataset(
        {"x_eval": variable(("sample", "x_dim"), x, "inputs of the population-risk sample")},
        attrs={"input_std": float(training_cfg["input_std"])},
    )


def initial_dataset(
    group_cfg: Mapping,
    unit_cfg: Mapping,
    training_cfg: Mapping,
    init: str,
    n_particles: int,
    seeds: Sequence[int],
) -> xr.Dataset:
    """Shared initial clouds ``initial_particles`` ``(seed, particle, coord)`` of one (init, N)."""
    group = build_group(group_cfg, unit_cfg)
    seeds = [int(s) for s in seeds]
    clouds = np.stack([
        initial_particles(group, int(n_particles), s, init, float(training_cfg["init_std"]))
        for s in seeds
    ])
    return xr.Dataset(
        {
            "initial_particles": variable(
                ("seed", "particle", "coord"), clouds, f"initial particles ({init} start)"
            )
        },
        coords={"seed": seeds, "particle": np.arange(n_particles), "coord": np.arange(group.dim_z)},
        attrs={"init": init, "N": int(n_particles)},
    )


def read_initial(ds: xr.Dataset) -> dict[int, np.ndarray]:
    """``{seed: (N, D) cloud}`` from an :func:`initial_dataset`."""
    return {int(s): ds["initial_particles"].sel(seed=s).values for s in ds["seed"].values}
