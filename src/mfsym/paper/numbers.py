"""The manuscript's measured numbers and the claims table, computed from the result datasets.

Inputs are ``results/summary.nc`` (dims ``init, N, teacher, scheme, seed`` and ``pair``) and
``results/heuristic.nc``. Every statistic is a mean over seeds, written ``m(·)`` below;
``N_max`` is the largest N of the grid.

Fitted slope.  For a positive quantity q(N) the slope is the ordinary least-squares slope
of ``log m(q)(N)`` against ``log N`` over every N of the grid,

    s = Σ_k (l_k − l̄)(y_k − ȳ) / Σ_k (l_k − l̄)²,   l_k = log N_k,  y_k = log m(q)(N_k),

so ``m(q) ∝ N^s``.  It needs two distinct N and positive means; otherwise it is ``NaN``
and the claim it decides is "not measured".

Verdicts (thresholds are the configuration's ``paper.criteria``; the defaults are half the
expected exponents: fluctuations of a coupled finite-N cloud decay like N^{-1/2}, the W₂
distance between a 4-dimensional empirical measure and its reflection like N^{-1/4}):

* Claim 1, same mean-field dynamics (SI start, and again WI start): with each symmetric
  teacher (WI, SI) the RMD between vanilla–DA, vanilla–FA and DA–FA shrinks with N: the
  largest fitted slope is ``≤ decay_slope_max`` (or every mean is already ``≤ exact_tol``);
  and, where the summary has the same-scheme floor ``rmd_baseline`` (two runs of one scheme
  from one start with independent streams), the between-scheme distance is no larger than
  ``floor_ratio_max`` times that floor: ``max_{N, pair, teacher} m(RMD_between) /
  m(RMD_baseline) ≤ floor_ratio_max``.
* Claim 1, WI laws preserved: with a WI start, the RMD of vanilla, DA and FA to their
  symmetrised cloud shrinks with N: largest slope ``≤ wi_slope_max``.
* Claim 2, vanilla's distance to E^G shrinks with N (SI start, symmetric teachers): largest
  slope of RMD(ν, P_E#ν) ``≤ decay_slope_max``.
* Claim 2, random-g DA's distance to E^G shrinks with N (SI start, every teacher: a
  symmetric teacher makes it another vanilla, the arbitrary one is symmetrised by DA):
  largest slope ``≤ decay_slope_max``.
  When either row is not supported and the summary has the runs' ``rmd_projected_curve``
  and EA runs, it also shows how the distance left E^G (:func:`escape_evidence`): with the
  worst symmetric teacher, EA's final risk over the scheme's (above 1: the free dynamics
  found a lower risk off E^G, so the point of E^G the mean-field flow reaches is a saddle),
  the first time the distance reaches ``escape_min`` at the smallest and the largest N
  (a saddle delays the escape like log N), and the slope in N before any escape.
* Claim 2, FA, orbit-averaged DA and EA stay on E^G (SI start, every teacher: their drift
  is equivariant): the largest RMD(ν, P_E#ν) over every N, seed and teacher is
  ``≤ exact_tol``.  Orbit-averaged DA is the grid's "DA-orbit" scheme; without it, the
  row is read from the Noether invariance study (``dist_fixed`` of DA-orbit, online mode,
  last time, an RMS distance to E^G), and the table says which.  When such a row is not
  supported and the summary has the runs' ``rmd_projected_curve``, the row also shows where
  the departure comes from (:func:`departure_evidence`): the N of the largest distance,
  the largest distance at every other N, and that run's exponential growth rate in time.
  An equivariant drift keeps E^G invariant in exact arithmetic at any step, so a distance
  that rises from rounding level (~1e-16) at a steady rate is rounding amplified by a
  transversally unstable E^G (the large steps α/N of the smallest N), not a drift off it.
* Claim 3, arbitrary teacher: vanilla leaves E^G at every N: ``min_N m(RMD(ν, P_E#ν)) ≥
  escape_min``.
* Claim 4, the heuristic recovers E^G: in every setting the recovered dimension equals
  dim E^G and the largest principal angle to E^G is ``≤ angle_max_deg`` degrees.

A verdict is "supported" or "not supported at this configuration"; "not measured" when the
results hold no data for it (e.g. no WI start in the grid, a single N).

The rows are :data:`CLAIM_ROWS`, functions ``(summary, criteria, extra) → Claim`` in table
order (``extra``: the other inputs, e.g. ``"invariance"``); a new row is one more function.

The rotation setting (``rotation/summary.nc``, PAPER.md §11: SO(2) or O(2) about one axis,
uv unit) gets the rows of claims 1–3 again, decided by the same criteria
(:func:`rotation_claims`); their keys start with ``Rot`` and their statements name the
setting.  Its heuristic setting is one of claim 4's settings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from itertools import product
from pathlib import Path

import numpy as np
import xarray as xr

from ..core.schemes import SCHEME_VARIANTS
from ..core.schemes import TRAINING_MODES as NOETHER_MODES
from ..core.units import ACTIVATIONS
from ..records import lineage
from ..records.atomic import write_text
from ..records.results import read_dataset
from ..studies.precision import fa_rounding_drift
from .tex import (
    escape_tex,
    format_exact,
    format_list,
    format_number,
    macro_name,
    render_macros,
)

SI, WI = "SI", "WI"
INITS = ("SI", "WI")
TEACHERS = ("arbitrary", "WI", "SI")
SCHEMES = ("vanilla", "DA", "FA", "EA")
PAIRS = ("vanilla-DA", "vanilla-FA", "DA-FA", "vanilla-EA", "DA-EA", "FA-EA")
NOETHER_SCHEMES = tuple(SCHEME_VARIANTS)
SYMMETRIC_TEACHERS = ("WI", "SI")
ARBITRARY = "arbitrary"
FREE_SCHEMES = ("vanilla", "DA", "FA")
FREE_PAIRS = ("vanilla-DA", "vanilla-FA", "DA-FA")
DA_ORBIT = "DA-orbit"
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported at this configuration"
NOT_MEASURED = "not measured"
SUMMARY_VARIABLES = {
    "rmd_projected": ("init", "N", "teacher", "scheme", "seed"),
    "rmd_symmetrized": ("init", "N", "teacher", "scheme", "seed"),
    "population_risk": ("init", "N", "teacher", "scheme", "seed"),
    "rmd_between": ("init", "N", "teacher", "pair", "seed"),
}


class PaperInputError(ValueError):
    """A result file needed by the manuscript is missing or violates its schema."""


@dataclass(frozen=True)
class Criteria:
    """Thresholds of the verdicts (see the module docstring)."""

    decay_slope_max: float = -0.25
    wi_slope_max: float = -0.125
    exact_tol: float = 1e-4
    escape_min: float = 0.05
    angle_max_deg: float = 5.0
    floor_ratio_max: float = 1.0

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"paper.criteria.{f.name} = {v!r} is invalid; must be a number")
        for key in ("exact_tol", "escape_min", "angle_max_deg", "floor_ratio_max"):
            if getattr(self, key) <= 0:
                raise ValueError(f"paper.criteria.{key} = {getattr(self, key)!r}; must be > 0")

    @classmethod
    def from_dict(cls, values: Mapping) -> Criteria:
        allowed = sorted(f.name for f in fields(cls))
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(f"unknown paper.criteria key(s) {unknown}; allowed: {allowed}")
        return cls(**dict(values))


@dataclass(frozen=True)
class Claim:
    """One row of the claims table.

    claim: number of the claim in the specification (1–4); key: letters naming its macros;
    statement, criterion: TeX text; values: (TeX label, number) pairs shown as evidence;
    verdict: SUPPORTED, NOT_SUPPORTED or NOT_MEASURED.
    """

    claim: int
    key: str
    statement: str
    values: tuple[tuple[str, float], ...]
    criterion: str
    verdict: str


# ---------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------
def loglog_slope(n, y) -> float:
    """Least-squares slope of ``log y`` against ``log n`` (NaN if it is not defined)."""
    n = np.asarray(n, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if n.shape != y.shape or n.ndim != 1:
        raise ValueError(f"n and y must be 1-D of equal length, got {n.shape} and {y.shape}")
    if (
        np.unique(n).size < 2
        or not np.all(np.isfinite(y))
        or np.any(y <= 0)
        or np.any(n <= 0)
    ):
        return math.nan
    lx, ly = np.log(n), np.log(y)
    lx_c = lx - lx.mean()
    return float((lx_c * (ly - ly.mean())).sum() / (lx_c**2).sum())


def seed_mean(da: xr.DataArray) -> xr.DataArray:
    return da.mean("seed")


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return NOT_MEASURED
    return SUPPORTED if ok else NOT_SUPPORTED


def _present(ds: xr.Dataset, dim: str, labels: Sequence[str]) -> list[str]:
    have = set(ds[dim].values.tolist())
    return [lab for lab in labels if lab in have]


def check_summary(ds: xr.Dataset) -> None:
    """Raise :class:`PaperInputError` unless ``ds`` has the summary's variables and dims."""
    for name, dims in SUMMARY_VARIABLES.items():
        if name not in ds.data_vars:
            raise PaperInputError(
                f"summary lacks variable {name!r}; expected {sorted(SUMMARY_VARIABLES)}"
            )
        if set(ds[name].dims) != set(dims):
            raise PaperInputError(
                f"summary variable {name!r} has dims {ds[name].dims}; expected {dims}"
            )


def _shrinks(ds_n, curves: list[np.ndarray], slope_max: float, tol: float):
    """(largest slope, ok) for curves m(q)(N); ok is None when no slope is defined."""
    if all(float(np.max(c)) <= tol for c in curves):
        return max((loglog_slope(ds_n, c) for c in curves), default=math.nan), True
    slopes = [loglog_slope(ds_n, c) for c in curves]
    if not slopes or any(math.isnan(s) for s in slopes):
        return math.nan, None
    worst = max(slopes)
    return worst, worst <= slope_max


# ---------------------------------------------------------------------------------------
# the claims
# ---------------------------------------------------------------------------------------
def _not_measured(claim, key, statement, criterion, why) -> Claim:
    return Claim(claim, key, statement, ((escape_tex(why), math.nan),), criterion, NOT_MEASURED)


def _decay_claim(number, key, statement, criterion, m, slope_max, crit, at_max) -> Claim:
    """A claim decided by the largest log-log slope in N of the seed means ``m`` (dims N
    and any others, one curve per other label); ``at_max`` are the values shown before it."""
    others = [d for d in m.dims if d != "N"]
    curves = m.stack(curve=others).transpose("curve", "N").values if others else [m.values]
    slope, ok = _shrinks(m.N.values, list(curves), slope_max, crit.exact_tol)
    values = (*at_max, ("largest slope", slope))
    return Claim(number, key, statement, values, criterion, _verdict(ok))


def _symmetric_decay_claim(ds, crit, number, key, statement, criterion, slope_max, var,
                           init, dim, labels) -> Claim:
    """Decay claim on ``var`` at ``init`` over the symmetric teachers and ``labels`` of
    ``dim``; shows the largest seed mean at N_max."""
    teachers = _present(ds, "teacher", SYMMETRIC_TEACHERS)
    present = _present(ds, dim, labels)
    if init not in ds.init.values or not teachers or not present:
        why = f"no {init} start with symmetric teachers and {', '.join(labels)}"
        return _not_measured(number, key, statement, criterion, why)
    m = seed_mean(ds[var].sel(init=init, teacher=teachers, **{dim: present}))
    at_max = ((r"largest RMD at $N_{\max}$", float(m.isel(N=-1).max())),)
    return _decay_claim(number, key, statement, criterion, m, slope_max, crit, at_max)


def _floor_ratio(ds, init, teachers, pairs) -> xr.DataArray | None:
    """m(RMD between) / m(RMD baseline) (dims N, teacher, pair), or None without a
    baseline in the summary or where a floor is not positive."""
    if "rmd_baseline" not in ds.data_vars:
        return None
    between = seed_mean(ds.rmd_between.sel(init=init, teacher=teachers, pair=pairs))
    floor = seed_mean(ds.rmd_baseline.sel(init=init, teacher=teachers))
    ratio = between / floor.where(floor > 0)
    return ratio if bool(np.isfinite(ratio).all()) else None


def _agree_claim(ds, crit, init, key) -> Claim:
    statement = (
        r"Vanilla, DA and FA training follow the same mean-field dynamics "
        rf"(symmetric teachers, {init} start)."
    )
    criterion = (
        r"largest slope of $m(\mathrm{RMD})$ between vanilla--DA, vanilla--FA, DA--FA "
        rf"against $N$ $\le$ {format_exact(crit.decay_slope_max)}, and at every $N$ "
        r"$m(\mathrm{RMD})$ $\le$ " + format_exact(crit.floor_ratio_max)
        + r" $\times$ the same-scheme floor (two vanilla runs, independent streams)"
    )
    claim = _symmetric_decay_claim(ds, crit, 1, key, statement, criterion,
                                   crit.decay_slope_max, "rmd_between", init, "pair",
                                   FREE_PAIRS)
    if claim.verdict == NOT_MEASURED:
        return claim
    teachers = _present(ds, "teacher", SYMMETRIC_TEACHERS)
    ratios = _floor_ratio(ds, init, teachers, _present(ds, "pair", FREE_PAIRS))
    if ratios is None:
        values = (*claim.values, ("largest ratio to the floor", math.nan))
        return Claim(1, key, statement, values, criterion, NOT_MEASURED)
    worst = ratios.where(ratios == ratios.max(), drop=True)
    ratio = float(ratios.max())
    values = (*claim.values, ("largest ratio to the floor", ratio))
    verdict = claim.verdict
    if ratio > crit.floor_ratio_max:
        verdict = NOT_SUPPORTED
        pair, teacher = (escape_tex(str(worst[d].values[0])) for d in ("pair", "teacher"))
        where = rf"{pair}, {teacher} teacher"
        values += ((rf"$N$ of the largest ratio ({where})", int(worst.N.values[0])),
                   (r"ratio at $N_{\max}$, largest over pairs and teachers",
                    float(ratios.isel(N=-1).max())))
    return Claim(1, key, statement, values, criterion, verdict)


def claim_free_schemes_agree(ds: xr.Dataset, crit: Criteria, extra=None) -> Claim:
    return _agree_claim(ds, crit, SI, "FreeAgree")


def claim_free_schemes_agree_wi(ds: xr.Dataset, crit: Criteria, extra=None) -> Claim:
    return _agree_claim(ds, crit, WI, "FreeAgreeWI")


def claim_wi_preserved(ds: xr.Dataset, crit: Criteria, extra=None) -> Claim:
    statement = r"The dynamics stays weakly invariant (WI start, symmetric teachers)."
    criterion = (
        r"largest slope of $m(\mathrm{RMD}(\nu,\nu^G))$ of vanilla, DA, FA against $N$ "
        rf"$\le$ {format_exact(crit.wi_slope_max)}"
    )
    return _symmetric_decay_claim(ds, crit, 1, "WIPreserved", statement, criterion,
                                  crit.wi_slope_max, "rmd_symmetrized", WI, "scheme",
                                  FREE_SCHEMES)


def _shrinks_claim(ds, crit, scheme, teachers_wanted, key, statement) -> Claim:
    criterion = (
        r"largest slope of $m(\mathrm{RMD}(\nu,P_E\#\nu))$ against $N$ $\le$ "
        + format_exact(crit.decay_slope_max)
    )
    teachers = _present(ds, "teacher", teachers_wanted)
    if SI not in ds.init.values or not teachers or scheme not in ds.scheme.values:
        return _not_measured(2, key, statement, criterion, f"no SI {scheme} runs")
    m = seed_mean(ds.rmd_projected.sel(init=SI, teacher=teachers, scheme=scheme))
    at_max = tuple(
        (rf"{escape_tex(t)} teacher, $N_{{\max}}$", float(m.sel(teacher=t).isel(N=-1)))
        for t in teachers
    )
    claim = _decay_claim(2, key, statement, criterion, m, crit.decay_slope_max, crit, at_max)
    if claim.verdict == NOT_SUPPORTED:
        claim = replace(claim, values=claim.values + escape_evidence(ds, scheme, teachers, crit))
    return claim


def escape_evidence(ds: xr.Dataset, scheme: str, teachers: Sequence[str], crit: Criteria
                    ) -> tuple[tuple[str, float], ...]:
    """Why an SI-start distance to E^G that should shrink with N does not, from the summary.

    For the symmetric teacher of ``teachers`` with the largest m(RMD(ν, P_E#ν)) at N_max
    (there the population risk is the loss every scheme descends):

    * ``m(R_EA) / m(R_scheme)`` at N_max, the final population risks: EA is the gradient
      flow restricted to E^G, so a ratio above 1 says the free dynamics found a lower risk
      off E^G: the point of E^G that the mean-field flow reaches is a saddle of the risk,
      and the finite-N fluctuations (size ~N^{-1/2}) grow away from it;
    * the first snapshot time at which m(``rmd_projected_curve``) ≥ ``escape_min``, at the
      smallest and at the largest N (NaN: not within T); a saddle delays it like log N;
    * the log-log slope in N of m(``rmd_projected_curve``) at the last snapshot t > 0 at
      which no N has escaped (NaN if none): before the escape the distance shrinks with N.

    Empty without EA runs, without the curves or without a symmetric teacher.
    """
    symmetric = [t for t in teachers if t in SYMMETRIC_TEACHERS]
    if "EA" not in ds.scheme.values or "rmd_projected_curve" not in ds or not symmetric:
        return ()
    final = seed_mean(ds.rmd_projected.sel(init=SI, teacher=symmetric, scheme=scheme))
    teacher = str(final.isel(N=-1).idxmax("teacher").item())
    risk = seed_mean(ds.population_risk.sel(init=SI, teacher=teacher)).isel(N=-1)
    curve = seed_mean(ds.rmd_projected_curve.sel(init=SI, teacher=teacher, scheme=scheme))
    time = curve.transpose("N", "time").time.values
    escaped = curve.transpose("N", "time").values >= crit.escape_min

    def first_escape(row) -> float:
        return float(time[np.argmax(row)]) if row.any() else math.nan

    calm = np.flatnonzero(~escaped.any(axis=0) & (time > 0))
    at = calm[-1] if calm.size else None
    slope = (loglog_slope(curve.N.values, curve.isel(time=at).values) if at is not None
             else math.nan)
    name, who = escape_tex(teacher), escape_tex(scheme)
    return (
        (rf"{name} teacher: $m(R)$ of EA / of {who} at $N_{{\max}}$",
         float(risk.sel(scheme="EA") / risk.sel(scheme=scheme))),
        (r"first $t$ with $m(\mathrm{RMD}) \ge$ " + format_exact(crit.escape_min)
         + r", smallest $N$", first_escape(escaped[0])),
        (r"the same, $N_{\max}$", first_escape(escaped[-1])),
        (r"slope in $N$ at the last $t$ before any escape"
         + (rf" ($t =$ {format_number(float(time[at]))})" if at is not None else ""), slope),
    )


def claim_vanilla_shrinks(ds: xr.Dataset, crit: Criteria, extra=None) -> Claim:
    statement = (
        r"SI laws are preserved in the mean-field limit: with an SI start, vanilla's "
        r"distance to $E^G$ shrinks as $N$ grows (symmetric teachers)."
    )
    return _shrinks_claim(ds, crit, "vanilla", SYMMETRIC_TEACHERS, "VanillaShrinks",
                          statement)


def claim_da_shrinks(ds: xr.Dataset, crit: Criteria, extra=None) -> Claim:
    statement = (
        r"Random-$g$ DA is a finite-$N$ SGD too: with an SI start its distance to $E^G$ "
        r"shrinks as $N$ grows, for the symmetric teachers and the arbitrary one."
    )
    return _shrinks_claim(ds, crit, "DA", TEACHERS, "DAShrinks", statement)


def _stays_from_noether(invariance, crit, key, statement, criterion) -> Claim | None:
    """The DA-orbit row from the Noether invariance study, or None without it."""
    if invariance is None or DA_ORBIT not in map(str, invariance.scheme.values):
        return None
    modes = [m for m in map(str, invariance["mode"].values) if m == "online"]
    if not modes:
        return None
    worst = float(invariance["dist_fixed"].sel(scheme=DA_ORBIT, mode="online")
                  .isel(time=-1).max())
    values = ((r"largest RMS distance to $E^G$ (Noether study, online)", worst),)
    return Claim(2, key, statement + r" Source: the Noether invariance study.", values,
                 criterion.replace(r"$\mathrm{RMD}(\nu,P_E\#\nu)$ over $N$, seeds, teachers",
                                   r"RMS distance to $E^G$ at the last time"),
                 _verdict(worst <= crit.exact_tol))


#: Distances below this are rounding level; the growth rate is fitted above it.
ROUNDING_LEVEL = 1e-14


def growth_rate(time, curve) -> float:
    """Least-squares slope λ of ``log d(t)`` against t over the snapshots with
    ``d(t) ≥ ROUNDING_LEVEL``, so ``d(t) ∝ e^{λ t}`` there; NaN with fewer than two."""
    t = np.asarray(time, dtype=np.float64)
    d = np.asarray(curve, dtype=np.float64)
    keep = np.isfinite(d) & (d >= ROUNDING_LEVEL)
    if keep.sum() < 2 or np.ptp(t[keep]) == 0:
        return math.nan
    return float(np.polyfit(t[keep], np.log(d[keep]), 1)[0])


def departure_evidence(ds: xr.Dataset, scheme: str, teachers: Sequence[str]
                       ) -> tuple[tuple[str, float], ...]:
    """Where the largest SI-start RMD(ν, P_E#ν) of ``scheme`` comes from.

    Returns (label, value) pairs: the N of the largest distance over N, seeds and
    ``teachers``; the largest distance at every other N (NaN with one N); and the growth
    rate λ (:func:`growth_rate`) of that run's ``rmd_projected_curve`` (dims ``(time,)``),
    when the summary has the curves.
    """
    final = ds.rmd_projected.sel(init=SI, teacher=list(teachers), scheme=scheme)
    worst = final.where(final == final.max(), drop=True)
    n_worst = worst.N.values[0]
    others = final.sel(N=[n for n in final.N.values if n != n_worst])
    values = [(r"$N$ of the largest", float(n_worst)),
              (r"largest RMD at the other $N$",
               float(others.max()) if others.sizes["N"] else math.nan)]
    if "rmd_projected_curve" in ds:
        index = {d: worst[d].values[0] for d in ("teacher", "seed")}
        curve = ds.rmd_projected_curve.sel(init=SI, scheme=scheme, N=n_worst, **index)
        values.append((r"its growth rate in $t$ (fit of $\log\mathrm{RMD}$ above "
                       + format_exact(ROUNDING_LEVEL) + ")",
                       growth_rate(curve.time.values, curve.values)))
    return tuple(values)


def claim_stays_on_eg(ds: xr.Dataset, scheme: str, crit: Criteria, extra=None) -> Claim:
    what = {"EA": r"by construction", "FA": r"equivariant drift",
            DA_ORBIT: r"orbit-averaged DA, equivariant drift"}.get(scheme, "")
    statement = (rf"With an SI start, {escape_tex(scheme)} stays on $E^G$ at every $N$ "
                 rf"({what}; every teacher).")
    criterion = (
        r"largest $\mathrm{RMD}(\nu,P_E\#\nu)$ over $N$, seeds, teachers $\le$ "
        + format_exact(crit.exact_tol)
    )
    key = macro_name(scheme, "OnEG", prefix="")
    teachers = list(ds.teacher.values)
    if SI not in ds.init.values or not teachers or scheme not in ds.scheme.values:
        if scheme == DA_ORBIT:
            fallback = _stays_from_noether((extra or {}).get("invariance"), crit, key,
                                           statement, criterion)
            if fallback is not None:
                return fallback
        return _not_measured(2, key, statement, criterion, f"no SI {scheme} runs")
    worst = float(ds.rmd_projected.sel(init=SI, teacher=teachers, scheme=scheme).max())
    values = ((r"largest RMD", worst),)
    if worst > crit.exact_tol:
        values += departure_evidence(ds, scheme, teachers)
    if scheme == DA_ORBIT:
        statement += r" Source: the grid."
    return Claim(2, key, statement, values, criterion, _verdict(worst <= crit.exact_tol))


def claim_arbitrary_escapes(ds: xr.Dataset, crit: Criteria, extra=None) -> Claim:
    statement = r"With an arbitrary teacher, vanilla leaves $E^G$ at every $N$ (SI start)."
    criterion = (
        r"$\min_N m(\mathrm{RMD}(\nu,P_E\#\nu))$ $\ge$ " + format_exact(crit.escape_min)
    )
    if (
        SI not in ds.init.values
        or ARBITRARY not in ds.teacher.values
        or "vanilla" not in ds.scheme.values
    ):
        return _not_measured(3, "ArbitraryEscapes", statement, criterion, "no arbitrary teacher")
    m = seed_mean(ds.rmd_projected.sel(init=SI, teacher=ARBITRARY, scheme="vanilla")).values
    lowest = float(m.min())
    values = (
        (r"smallest RMD over $N$", lowest),
        ("slope", loglog_slope(ds.N.values, m)),
    )
    return Claim(3, "ArbitraryEscapes", statement, values, criterion,
                 _verdict(lowest >= crit.escape_min))


def _stays(scheme):
    def row(ds, crit, extra=None):
        return claim_stays_on_eg(ds, scheme, crit, extra)

    row.__name__ = f"claim_{scheme}_stays_on_eg"
    return row


#: The rows decided from the summary (and ``extra`` inputs), in table order.
CLAIM_ROWS = [
    claim_free_schemes_agree,
    claim_free_schemes_agree_wi,
    claim_wi_preserved,
    claim_vanilla_shrinks,
    claim_da_shrinks,
    _stays("FA"),
    _stays(DA_ORBIT),
    _stays("EA"),
    claim_arbitrary_escapes,
]


def summary_claims(ds: xr.Dataset, crit: Criteria, extra: Mapping | None = None
                   ) -> list[Claim]:
    """Claims 1–3, decided from the summary (:data:`CLAIM_ROWS`)."""
    return [row(ds, crit, extra or {}) for row in CLAIM_ROWS]


def rotation_claims(ds: xr.Dataset, crit: Criteria) -> list[Claim]:
    """Claims 1–3 on the rotation stage's summary: :func:`summary_claims` with the same
    criteria, keys prefixed ``Rot`` and statements naming the setting."""
    setting = escape_tex(str(ds.attrs.get("setting", "rotation")))
    return [
        replace(c, key=f"Rot{c.key}", statement=f"[{setting}] {c.statement}")
        for c in summary_claims(ds, crit)
    ]


def rotation_macros(ds: xr.Dataset, digits: int) -> dict[str, str]:
    """``mfRotTeacherError<teacher>``: each rotation teacher's relative equivariance error
    over Haar elements; ``mfRotQuadraturePoints``, ``mfRotSymmetrizedPoints``: K, K_sym."""
    out = {
        macro_name("RotTeacherError", t): format_number(
            float(ds["teacher_equivariance_error"].sel(teacher=t)), digits)
        for t in ds["teacher"].values
    }
    out["mfRotQuadraturePoints"] = format_number(int(ds.attrs["quadrature_points"]), digits)
    out["mfRotSymmetrizedPoints"] = format_number(int(ds.attrs["symmetrized_points"]), digits)
    return out


# ---------------------------------------------------------------------------------------
# macros
# ---------------------------------------------------------------------------------------
def _scalar_tex(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, np.number):
        value = value.item()
    if isinstance(value, int | float):
        return format_exact(value)
    return escape_tex(str(value))


def grid_macros(ds: xr.Dataset, digits: int) -> dict[str, str]:
    """The grid: list of N, N_max, number of seeds, initialisations, teachers, schemes."""
    n = [int(v) for v in ds.N.values]
    return {
        "mfNList": format_list(n, digits),
        "mfNMax": format_number(max(n), digits),
        "mfNMin": format_number(min(n), digits),
        "mfNumN": format_number(len(n), digits),
        "mfNumSeeds": format_number(int(ds.sizes["seed"]), digits),
        "mfInits": escape_tex(", ".join(map(str, ds.init.values))),
        "mfTeachers": escape_tex(", ".join(map(str, ds.teacher.values))),
        "mfSchemes": escape_tex(", ".join(map(str, ds.scheme.values))),
    }


def config_macros(section: str, values: Mapping) -> dict[str, str]:
    """One macro per scalar entry of a configuration section (e.g. ``mfTrainingAlpha``),
    written exactly as configured."""
    return {
        macro_name(section, key): _scalar_tex(v)
        for key, v in values.items()
        if isinstance(v, bool | int | float | str | np.number)
    }


def _labels(ds: xr.Dataset, dim: str, contract: Sequence[str]) -> list[str]:
    """The contract's labels of ``dim`` followed by any other label present in ``ds``."""
    present = [str(v) for v in ds[dim].values]
    return list(contract) + [v for v in present if v not in contract]


def _curve(m: xr.DataArray, **index) -> np.ndarray | None:
    """``m`` at the given labels as a curve over N, or None when a label is absent."""
    if any(str(v) not in set(map(str, m[k].values)) for k, v in index.items()):
        return None
    return m.sel(**index).values


def metric_macros(ds: xr.Dataset, digits: int) -> dict[str, str]:
    """Seed means at N_max and fitted slopes, one macro per (init, teacher, scheme|pair).

    Names: ``mf<Quantity><init><teacher><scheme>``, e.g. ``mfRmdProjSIWIVanilla`` (RMD to
    the projected cloud), ``mfRmdSym…``, ``mfRisk…``, ``mfSlopeRmdProj…``,
    ``mfRmdBetweenSIWIVanillaDA``. Every label of the results contract gets its macros,
    ``n/a`` where the grid lacks it, so the manuscript compiles on any grid.
    """
    out: dict[str, str] = {}
    n = ds.N.values
    inits = _labels(ds, "init", INITS)
    teachers = _labels(ds, "teacher", TEACHERS)
    quantities = (("RmdProj", "rmd_projected"), ("RmdSym", "rmd_symmetrized"),
                  ("Risk", "population_risk"))
    for label, var in quantities:
        m = seed_mean(ds[var])
        for init, teacher, scheme in product(inits, teachers, _labels(ds, "scheme", SCHEMES)):
            c = _curve(m, init=init, teacher=teacher, scheme=scheme)
            last, slope = (math.nan, math.nan) if c is None else (c[-1], loglog_slope(n, c))
            out[macro_name(label, init, teacher, scheme)] = format_number(last, digits)
            out[macro_name("Slope", label, init, teacher, scheme)] = format_number(slope, digits)
    for label, var in (("RmdBetween", "rmd_between"), ("LTwoBetween", "l2_between")):
        m = seed_mean(ds[var]) if var in ds.data_vars else None
        for init, teacher, pair in product(inits, teachers, _labels(ds, "pair", PAIRS)):
            c = None if m is None else _curve(m, init=init, teacher=teacher, pair=pair)
            last = math.nan if c is None else c[-1]
            out[macro_name(label, init, teacher, pair)] = format_number(last, digits)
    for label, var in (("RmdFloor", "rmd_baseline"), ("LTwoFloor", "l2_baseline")):
        m = seed_mean(ds[var]) if var in ds.data_vars else None
        for init, teacher in product(inits, teachers):
            c = None if m is None else _curve(m, init=init, teacher=teacher)
            last = math.nan if c is None else c[-1]
            out[macro_name(label, init, teacher)] = format_number(last, digits)
    return out


def precision_macros(drift: Mapping[str, float], n_particles: int, digits: int
                     ) -> dict[str, str]:
    """``mfPrecisionN`` and the largest RMD² of FA to its projection on E^G there in each
    dtype (``mfPrecisionDriftFloat…``), from :func:`mfsym.studies.precision.fa_rounding_drift`."""
    out = {"mfPrecisionN": format_number(int(n_particles), digits)}
    for dtype, value in drift.items():
        out[macro_name("PrecisionDrift", dtype)] = format_number(value, digits)
    return out


def claim_macros(claims: Sequence[Claim], digits: int) -> dict[str, str]:
    """Per claim its verdict and evidence values; plus the count of supported claims."""
    out = {}
    for c in claims:
        out[macro_name("Verdict", c.key)] = escape_tex(c.verdict)
        for i, (_, v) in enumerate(c.values, start=1):
            out[macro_name("Claim", c.key, "Value", str(i))] = format_number(v, digits)
    out["mfClaimsSupported"] = format_number(sum(c.verdict == SUPPORTED for c in claims), digits)
    out["mfClaimsTotal"] = format_number(len(claims), digits)
    return out


def _check_unique(*parts: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for part in parts:
        clash = sorted(set(merged) & set(part))
        if clash:
            raise ValueError(f"macro name(s) defined twice: {clash}")
        merged.update(part)
    return merged


# ---------------------------------------------------------------------------------------
# the claims table
# ---------------------------------------------------------------------------------------
def render_claims_table(claims: Sequence[Claim], digits: int) -> str:
    """The body of a ``tabularx`` (claim, statement, evidence, criterion, verdict)."""
    lines = [
        r"\begin{tabularx}{\linewidth}{@{}c>{\raggedright}X>{\raggedright}X"
        r">{\raggedright}X>{\raggedright\arraybackslash\hyphenpenalty=10000}p{2.3cm}@{}}",
        r"\toprule",
        r"Claim & Statement & Measured & Criterion & Verdict \\",
        r"\midrule",
    ]
    for c in claims:
        evidence = "; ".join(f"{label}: {format_number(v, digits)}" for label, v in c.values)
        verdict = rf"\textbf{{{escape_tex(c.verdict)}}}"
        lines.append(
            rf"{c.claim} & {c.statement} & {evidence} & {c.criterion} & {verdict} \\"
        )
    lines += [r"\bottomrule", r"\end{tabularx}"]
    return "\n".join(lines) + "\n"


def claims_json(claims: Sequence[Claim]) -> str:
    """The claims as JSON (NaN written as null)."""

    def clean(c: Claim) -> dict:
        d = asdict(c)
        d["values"] = [
            {"label": lab, "value": None if math.isnan(v) else v} for lab, v in c.values
        ]
        return d

    return json.dumps([clean(c) for c in claims], indent=2) + "\n"


# ---------------------------------------------------------------------------------------
# the heuristic (claim 4)
# ---------------------------------------------------------------------------------------
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


def claim_heuristic(ds: xr.Dataset | None, crit: Criteria) -> Claim:
    statement = (
        r"The discovery heuristic recovers $E^G$ (the largest subspace supporting SI laws)."
    )
    criterion = (
        r"recovered dimension $=\dim E^G$ and largest principal angle $\le$ "
        + format_exact(crit.angle_max_deg) + r"$^\circ$, in every setting"
    )
    if ds is None:
        return _not_measured(4, "Heuristic", statement, criterion, "heuristic not run")
    h = heuristic_outcome(ds)
    ok = h["matched"] == h["settings"] and h["max_angle_deg"] <= crit.angle_max_deg
    values = (
        ("recovered dimension", h["recovered_dim"]),
        (r"$\dim E^G$", h["true_dim"]),
        (r"largest angle ($^\circ$)", h["max_angle_deg"]),
    )
    return Claim(4, "Heuristic", statement, values, criterion, _verdict(ok))


def heuristic_macros(ds: xr.Dataset, digits: int) -> dict[str, str]:
    h = heuristic_outcome(ds)
    return {
        "mfHeurSettings": format_number(h["settings"], digits),
        "mfHeurSteps": format_number(h["steps"], digits),
        "mfHeurMatched": format_number(h["matched"], digits),
        "mfHeurRecoveredDim": format_number(h["recovered_dim"], digits),
        "mfHeurTrueDim": format_number(h["true_dim"], digits),
        "mfHeurMaxAngle": format_number(h["max_angle_deg"], digits),
    }


# ---------------------------------------------------------------------------------------
# the Noether studies (beyond the paper)
# ---------------------------------------------------------------------------------------
def noether_macros(drift: xr.Dataset, invariance: xr.Dataset, digits: int) -> dict[str, str]:
    """Numbers of the Noether studies (``mfsym.studies.noether``), ``n/a`` where absent.

    ``mfNoetherSlope<activation>``: median over modes and schemes of ``drift_slope``, the
    fitted slope of ``log max_i |ΔQ_i|`` on ``log η`` (1 for a conserved charge under steps
    of size η; tanh, not homogeneous, is the control).  ``mfNoetherDist<scheme><mode>``:
    RMS distance to E^G at the last time of ``dist_fixed`` (SI start).
    """
    out: dict[str, str] = {}
    slopes = drift["drift_slope"]
    for act in _labels(drift, "activation", ACTIVATIONS):
        v = (float(slopes.sel(activation=act).median()) if act in slopes.activation.values
             else math.nan)
        out[macro_name("NoetherSlope", act)] = format_number(v, digits)
    dist = invariance["dist_fixed"].isel(time=-1)
    for scheme, mode in product(_labels(invariance, "scheme", NOETHER_SCHEMES),
                                _labels(invariance, "mode", NOETHER_MODES)):
        c = _curve(dist, scheme=scheme, mode=mode)
        out[macro_name("NoetherDist", scheme, mode)] = format_number(
            math.nan if c is None else float(c), digits)
    return out


# ---------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------
def _read(path, what: str, config: Mapping | None, scope) -> xr.Dataset:
    if path is None or not Path(path).is_file():
        raise PaperInputError(
            f"the manuscript needs the {what} at {path!s}, which does not exist; "
            "build it first (snakemake builds it as an input of the paper rules)"
        )
    return read_dataset(path, config, scope)


def _deep_claims(deep_paths: Mapping, crit: Criteria, config) -> list[Claim]:
    from .deep import deep_claims  # mfsym.paper.deep builds on this module's statistics

    return [c for stage, path in deep_paths.items()
            for c in deep_claims(_read(path, f"deep stage {stage}", config,
                                       lineage.deep_stage(stage)), stage, crit)]


def write_paper_numbers(
    summary_path,
    macros_path,
    table_path,
    json_path,
    heuristic_path=None,
    noether_paths: Mapping[str, object] | None = None,
    sections: Mapping[str, Mapping] | None = None,
    criteria: Mapping | None = None,
    digits: int = 3,
    config: Mapping | None = None,
    precision_n: int | None = None,
    deep_paths: Mapping[str, object] | None = None,
    rotation_path=None,
) -> list[Claim]:
    """Compute the claims and write the macros, the claims table and its JSON.

    summary_path: ``summary.nc``; heuristic_path: ``heuristic.nc`` or None when the
    heuristic is not part of the manuscript (claim 4 is then "not measured");
    noether_paths: ``{"drift": path, "invariance": path}`` of the Noether studies, or None;
    sections: configuration sections whose scalars become macros, e.g.
    ``{"training": {...}}`` → ``\\mfTrainingAlpha``; criteria: ``paper.criteria``;
    config: the reader's configuration, against which every input's recorded one is
    checked where it determines that input (None: not checked); precision_n: N of the small
    float32-vs-float64 FA computation (:mod:`mfsym.studies.precision`, with
    ``sections["training"]``) behind the precision policy (None: not run).
    deep_paths: ``{stage: deep/<stage>.nc}`` of the deep settings (rows of
    :mod:`mfsym.paper.deep`). rotation_path: the rotation stage's ``rotation/summary.nc``,
    whose rows follow the grid's (None: no such rows).
    """
    crit = Criteria.from_dict(criteria or {})
    summary = _read(summary_path, "summary of the grid", config, lineage.SUMMARY)
    check_summary(summary)
    summary = summary.sortby("N")  # N_max is the last entry
    heuristic = (None if heuristic_path is None
                 else _read(heuristic_path, "heuristic results", config, lineage.HEURISTIC))
    noether_paths = dict(noether_paths or {})
    if noether_paths and set(noether_paths) != {"drift", "invariance"}:
        raise PaperInputError(
            f"noether_paths must name exactly 'drift' and 'invariance', got "
            f"{sorted(noether_paths)}"
        )
    noether = {k: _read(p, f"Noether {k} study", config, lineage.NOETHER)
               for k, p in noether_paths.items()}
    claims = summary_claims(summary, crit, {"invariance": noether.get("invariance")}) + [
        claim_heuristic(heuristic, crit)
    ]
    precision = {}
    if precision_n is not None:
        drift = fa_rounding_drift((sections or {}).get("training", {}), int(precision_n))
        precision = precision_macros(drift, int(precision_n), digits)
    claims += _deep_claims(deep_paths or {}, crit, config)
    rotation = None
    if rotation_path is not None:
        rotation = _read(rotation_path, "rotation summary", config, lineage.ROTATION)
        check_summary(rotation)
        rotation = rotation.sortby("N")
        claims += rotation_claims(rotation, crit)
    macros = _check_unique(
        grid_macros(summary, digits),
        *(config_macros(name, values) for name, values in (sections or {}).items()),
        config_macros("Crit", asdict(crit)),
        metric_macros(summary, digits),
        heuristic_macros(heuristic, digits) if heuristic is not None else {},
        noether_macros(noether["drift"], noether["invariance"], digits) if noether else {},
        precision,
        rotation_macros(rotation, digits) if rotation is not None else {},
        claim_macros(claims, digits),
    )
    header = f"Measured numbers generated from {Path(summary_path).name}; do not edit."
    write_text(macros_path, render_macros(macros, header))
    write_text(table_path, render_claims_table(claims, digits))
    write_text(json_path, claims_json(claims))
    return claims
