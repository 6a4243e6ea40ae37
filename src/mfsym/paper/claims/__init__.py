"""The claims table (PAPER.md §1, "How a claim is decided", revised): one module per claim
family, a registry of rows, the shared statistics.

* :mod:`.base` — verdict kinds, :class:`Claim`, :class:`Criteria`;
* :mod:`.stats` — slopes in N, the time-resolved shrink test, the rounding test;
* :mod:`.registry` — rows register per family (:func:`row`); :class:`Context`;
* :mod:`.grid` (claims 1–3 on the paper's grid), :mod:`.heuristic` (claim 4),
  :mod:`.deep`, :mod:`.rotation`, :mod:`.saddle` — the families;
* :mod:`.table` — the table, its JSON and macros.

A new row is one function decorated with ``@row(family)`` in its family module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import xarray as xr

from .base import (
    NOT_MEASURED,
    NOT_SUPPORTED,
    ROUNDING,
    SUPPORTED,
    VERDICTS,
    Claim,
    Criteria,
    PaperInputError,
)
from .deep import deep_claims
from .grid import check_summary
from .heuristic import claim_heuristic, heuristic_outcome
from .registry import Context, row, rows
from .rotation import rotation_claims
from .saddle import claim_escape_law, law_numbers
from .table import (
    claim_macros,
    claims_json,
    claims_markdown,
    render_claims_table,
    verdict_counts,
)

__all__ = [
    "NOT_MEASURED", "NOT_SUPPORTED", "ROUNDING", "SUPPORTED", "VERDICTS", "Claim", "Context",
    "Criteria", "PaperInputError", "all_claims", "check_summary", "claim_escape_law",
    "claim_heuristic", "claim_macros", "claims_json", "claims_markdown", "deep_claims",
    "heuristic_outcome", "law_numbers", "render_claims_table", "rotation_claims", "row", "rows",
    "summary_claims", "verdict_counts",
]


def summary_claims(ds: xr.Dataset, crit: Criteria, ctx: Context | None = None
                   ) -> list[Claim]:
    """Claims 1–3 on the paper's grid (the "grid" rows, in table order)."""
    ctx = replace(ctx or Context(), stage="grid")
    return [fn(ds, crit, ctx) for fn in rows("grid")]


def all_claims(summary: xr.Dataset, crit: Criteria, *, heuristic: xr.Dataset | None = None,
               deep: Mapping[str, xr.Dataset] | None = None,
               rotation: xr.Dataset | None = None, saddle: xr.Dataset | None = None,
               ctx: Context | None = None) -> list[Claim]:
    """Every row of the table, family after family: the grid, the heuristic, each deep
    stage, the rotation setting, and the saddle study's law (when ``saddle`` is given)."""
    ctx = ctx or Context()
    claims = summary_claims(summary, crit, ctx)
    claims += [fn(heuristic, crit, ctx) for fn in rows("heuristic")]
    for stage, ds in (deep or {}).items():
        claims += deep_claims(ds, stage, crit, ctx)
    if rotation is not None:
        claims += rotation_claims(rotation, crit, replace(ctx, saddle=saddle))
    if saddle is not None:
        claims += [fn(saddle, crit, replace(ctx, stage="saddle")) for fn in rows("saddle")]
    return claims
