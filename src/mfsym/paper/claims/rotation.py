"""Claims 1–3 on the rotation setting (``rotation/summary.nc``, PAPER.md §11: SO(2) or O(2)
about one axis, uv unit): the grid's rows (:mod:`mfsym.paper.claims.grid`) with the same
criteria, keys prefixed ``Rot`` and statements naming the setting.  A "shrinks with N" row
that finds an escape cites the escape law measured by the saddle study (``ctx.saddle``).
"""

from __future__ import annotations

from dataclasses import replace

import xarray as xr

from ..tex import escape_tex
from .base import Claim, Criteria
from .registry import Context, rows


def rotation_claims(ds: xr.Dataset, crit: Criteria, ctx: Context | None = None
                    ) -> list[Claim]:
    """The grid's rows on the rotation summary ``ds`` (stage "rotation")."""
    ctx = replace(ctx or Context(), stage="rotation", invariance=None)
    setting = escape_tex(str(ds.attrs.get("setting", "rotation")))
    return [replace(c, key=f"Rot{c.key}", statement=f"[{setting}] {c.statement}")
            for c in (fn(ds, crit, ctx) for fn in rows("grid"))]
