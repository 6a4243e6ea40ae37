"""Claims-table rows of the deep settings (PAPER.md §10), from ``deep/<stage>.nc``.

For each stage (``mlp``: size N; ``resnet``: size M at every depth L), SI start, seed means
``m(·)`` and the criteria of :class:`~mfsym.paper.claims.base.Criteria`:

* vanilla's distance to E^G shrinks with the size: the largest log-log slope in the size of
  ``m(RMD(ν, P_E#ν))`` over the symmetric teachers (and depths) is ``≤ decay_slope_max``
  (the stage records the final time only, so this is the final-time form of the
  time-resolved test);
* FA, orbit-DA and EA stay on E^G: the largest RMD(ν, P_E#ν) over sizes, depths, seeds and
  every teacher (their drift is equivariant whatever the data, as in the grid's rows) is
  ``≤ exact_tol``; DA joins the row only
  when the stage averaged DA over the orbit (``da_mode = orbit``); above the tolerance the
  worst run is rerun in both float types and the rounding test decides
  (:func:`~mfsym.paper.claims.grid.precision_swap`);
* the schemes collapse (claim 1 against the same-scheme floor, PAPER.md §1 revised): the
  largest slope of ``m(RMD)`` between vanilla–DA, vanilla–FA and DA–FA (symmetric
  teachers) is ``≤ decay_slope_max``, and the ratio r = m(RMD between) / m(RMD floor)
  (``rmd_baseline``: two runs of one scheme from one start, independent streams) falls with
  the size — the largest log-log slope of r over (pair, teacher[, depth]) is ``< 0`` — and
  ``max r`` at the largest size is ``≤ floor_ratio_max``.  A curve at most ``exact_tol`` at
  every size (orbit-DA and FA, both on E^G, differ by rounding) has already collapsed: its
  slope and its ratio, fits to rounding noise, do not count.  Without a floor the row is
  "not measured".

RMDs of the ResNet are pooled over layers (:mod:`mfsym.measure.layers`).  The stage is
``ctx.stage``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import xarray as xr

from ..tex import escape_tex, format_exact, macro_name
from .base import (
    FREE_PAIRS,
    NOT_MEASURED,
    NOT_SUPPORTED,
    ROUNDING,
    SI,
    SYMMETRIC_TEACHERS,
    Claim,
    Criteria,
    not_measured,
    present,
    seed_mean,
    verdict,
)
from .grid import decay_claim, floor_claim, precision_swap, worst_cell
from .registry import Context, row, rows

#: stage → (size axis, its TeX symbol)
SIZES = {"mlp": ("N", "$N$"), "resnet": ("M", "$M$")}
STAGE_TEXT = {"mlp": "mlp units", "resnet": "mean-ODE ResNet"}


def _stage(ctx: Context) -> str:
    if ctx.stage not in SIZES:
        raise ValueError(f"unknown deep stage {ctx.stage!r}; allowed: {list(SIZES)}")
    return ctx.stage


def _as_n(da: xr.DataArray, stage: str) -> xr.DataArray:
    """The seed mean with the size axis named N (what ``decay_claim`` fits against)."""
    size, m = SIZES[stage][0], seed_mean(da)
    return (m.rename({size: "N"}) if size != "N" else m).sortby("N")


def _si_symmetric(ds: xr.Dataset, var: str, dim: str, labels) -> xr.DataArray | None:
    teachers = present(ds, "teacher", SYMMETRIC_TEACHERS)
    have = present(ds, dim, labels)
    if SI not in ds.init.values or not teachers or not have:
        return None
    return ds[var].sel(init=SI, teacher=teachers, **{dim: have})


@row("deep")
def claim_deep_vanilla_shrinks(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    stage = _stage(ctx)
    sym = SIZES[stage][1]
    statement = (rf"{STAGE_TEXT[stage]}: with an SI start, vanilla's distance to $E^G$ "
                 rf"shrinks as {sym} grows (symmetric teachers).")
    criterion = (rf"largest slope of $m(\mathrm{{RMD}}(\nu,P_E\#\nu))$ against {sym} $\le$ "
                 + format_exact(crit.decay_slope_max))
    key = macro_name("Deep", stage, "VanillaShrinks", prefix="")
    return _size_decay(ds, crit, stage, 2, key, statement, criterion,
                       ("rmd_projected", "scheme", ("vanilla",)), "no SI vanilla runs")


def _size_decay(ds, crit, stage, number, key, statement, criterion, where, why,
                curves=lambda m: m) -> Claim:
    """A row decided by the largest slope in the stage's size of the seed means of
    ``where`` = (variable, dim, labels) over the symmetric teachers, SI start; ``curves``
    picks the curves that count; "not measured" (``why``) without such runs."""
    da = _si_symmetric(ds, *where)
    if da is None:
        return not_measured(number, key, statement, criterion, why)
    m = _as_n(da, stage)
    at_max = ((rf"largest RMD at {SIZES[stage][1]}$_{{\max}}$", float(m.isel(N=-1).max())),)
    return decay_claim(number, key, statement, criterion, curves(m), crit.decay_slope_max,
                       crit, at_max)


@row("deep")
def claim_deep_stays(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    stage = _stage(ctx)
    orbit = ds.attrs.get("da_mode") == "orbit"
    schemes = [s for s in ("FA", "DA", "EA") if s in ds.scheme.values and (s != "DA" or orbit)]
    names = ", ".join("orbit-DA" if s == "DA" else s for s in schemes) or "FA, EA"
    statement = (rf"{STAGE_TEXT[stage]}: with an SI start, {escape_tex(names)} stay on $E^G$ "
                 r"(every teacher).")
    criterion = (r"largest $\mathrm{RMD}(\nu,P_E\#\nu)$ over sizes, depths, seeds, teachers "
                 r"$\le$ " + format_exact(crit.exact_tol)
                 + r"; above it, the rounding test of the grid's rows")
    key = macro_name("Deep", stage, "StayOnEG", prefix="")
    if SI not in ds.init.values or not schemes:
        return not_measured(2, key, statement, criterion, "no SI FA/DA/EA runs")
    si = ds.rmd_projected.sel(init=SI)
    runs = {s: si.sel(scheme=s) for s in schemes}
    worst = {s: float(v.max()) for s, v in runs.items()}
    values = tuple((f"largest RMD, {'orbit-DA' if s == 'DA' else s}", v)
                   for s, v in worst.items())
    scheme = max(worst, key=worst.get)
    if worst[scheme] <= crit.exact_tol:
        return Claim(2, key, statement, values, criterion, verdict(True))
    cell = worst_cell(runs[scheme], init=SI, scheme=scheme)
    cell.setdefault("depth", 1)
    swap, ok = precision_swap(ctx, cell, crit)
    size, sym = SIZES[stage]
    where = ((rf"worst run: {sym}", float(cell[size])),)
    if stage == "resnet":
        where += ((r"its depth $L$", float(cell["depth"])),)
    return Claim(2, key, statement, values + where + swap, criterion,
                 ROUNDING if ok else NOT_SUPPORTED)


def not_collapsed(m: xr.DataArray, tol: float) -> xr.DataArray:
    """The curves of ``m`` (N, ...) above ``tol`` at some N; all of them if none is."""
    others = [d for d in m.dims if d != "N"]
    vals = m.transpose("N", *others).values.reshape(m.sizes["N"], -1)
    keep = (vals > tol).any(axis=0)
    vals = vals[:, keep] if keep.any() else vals
    return xr.DataArray(vals, dims=("N", "c"), coords={"N": m["N"].values})


@row("deep")
def claim_deep_schemes_agree(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    stage = _stage(ctx)
    _, sym = SIZES[stage]
    statement = (rf"{STAGE_TEXT[stage]}: vanilla, DA and FA approach one dynamics as {sym} "
                 r"grows (symmetric teachers, SI start).")
    criterion = (r"largest slope of $m(\mathrm{RMD})$ between vanilla--DA, vanilla--FA, DA--FA "
                 rf"against {sym} $\le$ {format_exact(crit.decay_slope_max)}; its ratio to "
                 r"the same-scheme floor (two vanilla runs, independent streams) falls with "
                 rf"{sym} (largest slope $<0$) and is $\le$ {format_exact(crit.floor_ratio_max)}"
                 rf" at {sym}$_{{\max}}$")
    key = macro_name("Deep", stage, "FreeAgree", prefix="")
    claim = _size_decay(ds, crit, stage, 1, key, statement, criterion,
                        ("rmd_between", "pair", FREE_PAIRS), "no SI runs of the free pairs",
                        lambda m: not_collapsed(m, crit.exact_tol))
    if claim.verdict == NOT_MEASURED:
        return claim

    def over_n(worst):
        where = ", ".join(f"L = {int(worst[d].values[0])}" if d == "depth"
                          else escape_tex(str(worst[d].values[0]))
                          + (" teacher" if d == "teacher" else "")
                          for d in worst.dims if d != "N")
        return rf"largest ratio over {sym} ({where})"

    return floor_claim(claim, floor_ratio(ds, stage, crit.exact_tol), crit,
                       rf"ratio to the floor at {sym}$_{{\max}}$, largest", over_n, rf"its {sym}")


def floor_ratio(ds: xr.Dataset, stage: str, tol: float) -> xr.DataArray | None:
    """r = m(RMD between) / m(RMD floor), SI start, symmetric teachers, free pairs not
    collapsed (at most ``tol`` at every size, :func:`not_collapsed`); dims N, teacher,
    pair (and depth).  None without a floor or where a floor is not positive."""
    if "rmd_baseline" not in ds.data_vars:
        return None
    teachers = present(ds, "teacher", SYMMETRIC_TEACHERS)
    between = _as_n(ds.rmd_between.sel(init=SI, teacher=teachers,
                                       pair=present(ds, "pair", FREE_PAIRS)), stage)
    live = [p for p in between.pair.values
            if bool((between.sel(pair=p) > tol).any())] or list(between.pair.values)
    floor = _as_n(ds.rmd_baseline.sel(init=SI, teacher=teachers), stage)
    ratio = between.sel(pair=live) / floor.where(floor > 0)
    return ratio if bool(np.isfinite(ratio).all()) else None


def deep_claims(ds: xr.Dataset, stage: str, crit: Criteria, ctx: Context | None = None
                ) -> list[Claim]:
    """The rows of one deep stage (module docstring)."""
    if stage not in SIZES:
        raise ValueError(f"unknown deep stage {stage!r}; allowed: {list(SIZES)}")
    ctx = replace(ctx or Context(), stage=stage)
    return [fn(ds, crit, ctx) for fn in rows("deep")]
