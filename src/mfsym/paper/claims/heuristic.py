"""Claim 4: the discovery heuristic recovers E^G (``results/heuristic.nc``).

Supported when, in every setting, the recovered dimension equals dim E^G and the largest
principal angle to E^G is ``≤ angle_max_deg`` degrees.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..tex import format_exact
from .base import Claim, Criteria, PaperInputError, not_measured, verdict
from .registry import Context, row

#: Roles read from ``heuristic.nc`` (names of ``mfsym.studies.heuristic``: per ``setting``,
#: ``recovered_dim``, ``true_dim``, ``principal_angles`` (setting, fixed_direction) in rad,
#: ``n_steps``); the later names of each role are accepted for other producers.
HEURISTIC_VARIABLES = {
    "recovered_dim": ("recovered_dim", "dim_recovered"),
    "true_dim": ("true_dim", "dim_fixed", "fixed_dim"),
    "angles": ("principal_angles", "principal_angle", "angles"),
}
_RADIANS = ("rad", "radian", "radians")


def _heuristic_var(ds: xr.Dataset, role: str) -> xr.DataArray:
    for name in HEURISTIC_VARIABLES[role]:
        if name in ds.data_vars:
            return ds[name]
    raise PaperInputError(
        f"heuristic results lack the {role.replace('_', ' ')} (looked for "
        f"{list(HEURISTIC_VARIABLES[role])}); variables present: {sorted(ds.data_vars)}"
    )


def heuristic_outcome(ds: xr.Dataset) -> dict[str, float]:
    """Worst case over the settings: recovered vs true dimension, largest angle (deg) and
    the most steps the heuristic ran.

    Principal angles are read in the units of their ``units`` attribute (radians are
    converted); NaN angles (no partner direction) count as 90°.
    """
    rec = _heuristic_var(ds, "recovered_dim")
    true = _heuristic_var(ds, "true_dim")
    angles = _heuristic_var(ds, "angles")
    scale = 180.0 / math.pi if angles.attrs.get("units", "").lower() in _RADIANS else 1.0
    ang = np.nan_to_num(np.asarray(angles.values, dtype=np.float64) * scale, nan=90.0)
    rec_v = np.asarray(rec.values, dtype=np.float64).ravel()
    true_v = np.broadcast_to(np.asarray(true.values, dtype=np.float64), rec.shape).ravel()
    steps = ds["n_steps"].values if "n_steps" in ds.data_vars else np.array(math.nan)
    return {
        "steps": int(np.max(steps)) if np.all(np.isfinite(steps)) else math.nan,
        "settings": int(rec_v.size),
        "matched": int(np.sum(rec_v == true_v)),
        "recovered_dim": int(rec_v[np.argmax(np.abs(rec_v - true_v))]),
        "true_dim": int(true_v[np.argmax(np.abs(rec_v - true_v))]),
        "max_angle_deg": float(ang.max()) if ang.size else math.nan,
    }


@row("heuristic")
def claim_heuristic(ds: xr.Dataset | None, crit: Criteria, ctx: Context | None = None
                    ) -> Claim:
    statement = (
        r"The discovery heuristic recovers $E^G$ (the largest subspace supporting SI laws)."
    )
    criterion = (
        r"recovered dimension $=\dim E^G$ and largest principal angle $\le$ "
        + format_exact(crit.angle_max_deg) + r"$^\circ$, in every setting"
    )
    if ds is None:
        return not_measured(4, "Heuristic", statement, criterion, "heuristic not run")
    h = heuristic_outcome(ds)
    ok = h["matched"] == h["settings"] and h["max_angle_deg"] <= crit.angle_max_deg
    values = (
        ("recovered dimension", h["recovered_dim"]),
        (r"$\dim E^G$", h["true_dim"]),
        (r"largest angle ($^\circ$)", h["max_angle_deg"]),
    )
    return Claim(4, "Heuristic", statement, values, criterion, verdict(ok))
