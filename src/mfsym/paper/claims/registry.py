"""The registry of claim rows: each claim family module registers its row functions with
:func:`row`, in table order, and the table is the families in :data:`FAMILIES` order.

A row is a function ``(ds, crit, ctx) -> Claim`` of the family's dataset ``ds``, the
:class:`~mfsym.paper.claims.base.Criteria` and a :class:`Context`; a new row is one
decorated function in one family module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import xarray as xr

#: The claim families in table order: the paper's grid (claims 1–3), the heuristic (claim
#: 4), the deep settings, the rotation setting and the saddle study.
FAMILIES = ("grid", "heuristic", "deep", "rotation", "saddle")

#: Reruns one cell of a stage in a given float type: ``rerun(stage, cell, dtype)`` →
#: ``(time, rmd_projected)`` with dense snapshots; ``cell`` names init, N, teacher, scheme,
#: seed (and depth for a deep stage).
Rerun = Callable[[str, Mapping, str], tuple]


@dataclass(frozen=True)
class Context:
    """What a row may need beside its dataset.

    stage: the stage whose dataset the row reads ("grid", "rotation", "mlp", "resnet",
    "saddle"); invariance: the Noether invariance study (the orbit-DA row's fallback) or
    None; rerun: the precision swap's :data:`Rerun`, or None (the rounding test is then
    not measured); saddle: the saddle study's dataset, cited by rows that find an escape,
    or None.
    """

    stage: str = "grid"
    invariance: xr.Dataset | None = None
    rerun: Rerun | None = None
    saddle: xr.Dataset | None = None


_ROWS: dict[str, list[Callable]] = {family: [] for family in FAMILIES}


def row(family: str):
    """Register the decorated function as the next row of ``family``."""
    if family not in _ROWS:
        raise ValueError(f"unknown claim family {family!r}; allowed: {list(FAMILIES)}")

    def register(fn: Callable) -> Callable:
        _ROWS[family].append(fn)
        return fn

    return register


def rows(family: str) -> list[Callable]:
    """The registered rows of ``family`` in table order."""
    if family not in _ROWS:
        raise ValueError(f"unknown claim family {family!r}; allowed: {list(FAMILIES)}")
    return list(_ROWS[family])
