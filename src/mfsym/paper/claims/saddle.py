"""The escape law of the saddle study (``results/saddle.nc``, PAPER.md §12).

With the WI teacher and an SI start in the rotation setting, the point of E^G that the
SI-restricted flow reaches is a saddle; vanilla's finite-N cloud escapes it at
t_esc(N) ≈ t₀ + ln N / (2λ).  The row is supported when at least :data:`MIN_ESCAPES` N
escape within T, the schemes held on E^G end at a higher risk than vanilla at every N
(every ratio in ``risk_ratio`` above 1: a saddle, not a minimum), the slope b of t_esc
against ln N is positive, and b·2λ (λ at the largest escaping N) lies within
[1/``law_ratio_max``, ``law_ratio_max``].  The collapse spread and b·2λ with the median
λ are shown beside it, every number with its bootstrap interval over seeds.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..tex import format_exact
from .base import Claim, Criteria, not_measured, verdict
from .registry import Context, row

#: Fewest N that must escape for the law (a slope through two points is not a test).
MIN_ESCAPES = 3


def _interval(ds: xr.Dataset, name: str) -> tuple[float, float]:
    bounds = ds[f"{name}_interval"]
    return float(bounds.sel(bound="low")), float(bounds.sel(bound="high"))


def law_numbers(ds: xr.Dataset) -> dict[str, float]:
    """The law's numbers from a saddle dataset (:func:`mfsym.studies.saddle.
    escape_analysis`): escaping N, the reference N and its λ, b, 1/(2λ_ref), b·2λ_ref,
    b·2λ_median, the collapse spread, each with its interval (``*_low``, ``*_high``), and
    the smallest risk ratio of a held scheme to vanilla."""
    out = {"escaped_n": int(ds.attrs.get("escaped_n", 0))}
    ref = int(ds.attrs.get("reference_N", 0))
    out.update(reference_N=float(ref) if ref else math.nan,
               rate=float(ds["growth_rate"].sel(N=ref)) if ref else math.nan)
    for name in ("escape_slope", "predicted_slope", "law_ratio", "law_ratio_median",
                 "collapse_spread"):
        out[name] = float(ds[name])
        out[f"{name}_low"], out[f"{name}_high"] = _interval(ds, name)
    ratio = ds["risk_ratio"]
    out["risk_ratio_min"] = float(ratio.min()) if ratio.size else math.nan
    return out


@row("saddle")
def claim_escape_law(ds: xr.Dataset | None, crit: Criteria, ctx: Context) -> Claim:
    statement = (
        r"Vanilla's finite-$N$ cloud leaves the saddle on $E^G$ (rotation setting, WI "
        r"teacher, SI start) at $t_{\mathrm{esc}}(N) \approx t_0 + \ln N / (2\lambda)$."
    )
    criterion = (
        rf"at least {MIN_ESCAPES} $N$ escape; every risk ratio of the schemes held on $E^G$ "
        r"to vanilla $>1$; slope $b$ of $t_{\mathrm{esc}}$ against $\ln N$ $>0$ and "
        r"$b\cdot 2\lambda$ within $\times$" + format_exact(crit.law_ratio_max)
        + r" of 1"
    )
    if ds is None:
        return not_measured(2, "SaddleLaw", statement, criterion, "saddle study not run")
    n = law_numbers(ds)
    values = (
        (r"escaping $N$", n["escaped_n"]),
        (r"$b$", n["escape_slope"]),
        (r"$b$, interval", n["escape_slope_low"]), ("to", n["escape_slope_high"]),
        (r"$1/(2\lambda)$ at $N =$ " + format_exact(n["reference_N"]), n["predicted_slope"]),
        (r"$b\cdot 2\lambda$", n["law_ratio"]),
        (r"interval", n["law_ratio_low"]), ("to", n["law_ratio_high"]),
        (r"$b\cdot 2\lambda$ with the median $\lambda$", n["law_ratio_median"]),
        ("collapse spread", n["collapse_spread"]),
        ("smallest risk ratio to vanilla", n["risk_ratio_min"]),
    )
    ratio = n["law_ratio"]
    ok = (n["escaped_n"] >= MIN_ESCAPES and n["risk_ratio_min"] > 1
          and n["escape_slope"] > 0 and np.isfinite(ratio)
          and 1.0 / crit.law_ratio_max <= ratio <= crit.law_ratio_max)
    return Claim(2, "SaddleLaw", statement, values, criterion, verdict(bool(ok)))
