"""Numbers of the second seed's four consequences (PAPER.md §9b) for the manuscript.

One function per study dataset (:mod:`mfsym.studies.balance`, ``.momentum``, ``.tangent``);
each returns ``{macro name: TeX}``, ``n/a`` where a label is absent, so the manuscript
compiles on any configuration.  :func:`seed_macros` gathers them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import xarray as xr

from .tex import format_number, macro_name

#: Activations whose one-step slope the manuscript quotes (homogeneous first, tanh control).
BALANCE_ACTIVATIONS = ("relu", "leaky_relu", "linear", "tanh")
HOMOGENEOUS = ("relu", "leaky_relu", "linear")
SCALINGS = ("mean_field", "ntk")


def _at(da: xr.DataArray, dim: str, label) -> float:
    labels = [str(v) for v in da[dim].values]
    return float(da.isel({dim: labels.index(str(label))})) if str(label) in labels else math.nan


def _max_over(da: xr.DataArray, dim: str, labels) -> float:
    values = [_at(da, dim, lab) for lab in labels]
    values = [v for v in values if not math.isnan(v)]
    return max(values) if values else math.nan


def balance_macros(ds: xr.Dataset, digits: int) -> dict[str, str]:
    """``mfBalanceSlope<act>`` (one-step change against η), ``mfBalanceIdentity`` (largest
    relative error of the closed form over homogeneous activations), ``mfBalanceIdentityTanh``,
    ``mfBalanceResnetSlope`` / ``…ControlSlope`` / ``…Identity`` / ``…Deviation``."""
    f = lambda v: format_number(v, digits)  # noqa: E731
    out = {macro_name("BalanceSlope", a): f(_at(ds.step_change_slope, "activation", a))
           for a in BALANCE_ACTIVATIONS}
    out.update({
        "mfBalanceIdentity": f(_max_over(ds.identity_error, "activation", HOMOGENEOUS)),
        "mfBalanceIdentityTanh": f(_at(ds.identity_error, "activation", "tanh")),
        "mfBalanceResnetSlope": f(float(ds.resnet_step_change_slope)),
        "mfBalanceResnetControlSlope": f(float(ds.resnet_mean_balance_slope)),
        "mfBalanceResnetIdentity": f(float(ds.resnet_identity_error.max())),
        "mfBalanceResnetDeviation": f(float(ds.resnet_deviation_change.max())),
        "mfBalanceResnetDepth": f(int(ds.attrs["resnet_depth"])),
    })
    return out


def momentum_macros(ds: xr.Dataset, digits: int) -> dict[str, str]:
    """Relative angular momentum ``max_t |J| / scale``: ``mfMomentumRaw`` (K = 1),
    ``mfMomentumLargestK`` and ``mfMomentumAtLargestK``, ``mfMomentumPopulation`` and its
    ``mfMomentumPopulationPoints``."""
    f = lambda v: format_number(v, digits)  # noqa: E731
    ks = ds.K.values
    return {
        "mfMomentumRaw": f(float(ds.j_rel_raw_max)),
        "mfMomentumLargestK": f(int(ks.max())),
        "mfMomentumAtLargestK": f(float(ds.j_rel_max.values[int(np.argmax(ks))])),
        "mfMomentumPopulation": f(float(ds.j_rel_population_max)),
        "mfMomentumPopulationPoints": f(int(ds.attrs["population_points"])),
    }


def tangent_macros(ds: xr.Dataset, digits: int) -> dict[str, str]:
    """``mfTangentDefectSlope``; per scaling ``mfTangentKernelSlope<scaling>``,
    ``mfTangentKernelSmall<scaling>`` / ``…Large<scaling>`` (movement at the smallest and
    largest N) and ``mfTangentParticleSlope<scaling>``; ``mfTangentNmin`` / ``mfTangentNmax``."""
    f = lambda v: format_number(v, digits)  # noqa: E731
    ns = ds.N.values
    out = {"mfTangentDefectSlope": f(float(ds.energy_defect_slope)),
           "mfTangentDefectMax": f(float(ds.energy_defect.max())),
           "mfTangentNmin": f(int(ns.min())), "mfTangentNmax": f(int(ns.max()))}
    for s in SCALINGS:
        move = ds.kernel_movement
        out[macro_name("TangentKernelSlope", s)] = f(_at(ds.kernel_movement_slope, "scaling", s))
        out[macro_name("TangentParticleSlope", s)] = f(
            _at(ds.particle_movement_slope, "scaling", s))
        present = s in [str(v) for v in move.scaling.values]
        row = move.sel(scaling=s).values if present else np.full(len(ns), np.nan)
        out[macro_name("TangentKernelSmall", s)] = f(float(row[int(np.argmin(ns))]))
        out[macro_name("TangentKernelLarge", s)] = f(float(row[int(np.argmax(ns))]))
    return out


def seed_macros(datasets: Mapping[str, xr.Dataset], digits: int) -> dict[str, str]:
    """Macros of the studies present in ``datasets`` (keys balance, momentum, tangent)."""
    makers = {"balance": balance_macros, "momentum": momentum_macros,
              "tangent": tangent_macros}
    unknown = sorted(set(datasets) - set(makers))
    if unknown:
        raise ValueError(f"unknown Noether seed studies {unknown}; allowed: {sorted(makers)}")
    out: dict[str, str] = {}
    for name, ds in datasets.items():
        out.update(makers[name](ds, digits))
    return out
