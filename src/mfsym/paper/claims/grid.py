"""Claims 1–3 on the paper's grid (``results/summary.nc``; the rotation family reads the
rotation stage's summary with the same rows).

Inputs have dims ``init, N, teacher, scheme, seed`` (``pair`` for distances between schemes)
and, for the time-resolved rows, ``rmd_projected_curve`` over ``time``.  ``m(·)`` is the
mean over seeds; N_max the largest N.  The criteria (PAPER.md §1, revised; thresholds of
:class:`~mfsym.paper.claims.base.Criteria`):

* Claim 1, schemes agree (SI start, and again WI start; symmetric teachers): the largest
  log-log slope in N of m(RMD) between vanilla–DA, vanilla–FA, DA–FA is
  ``≤ decay_slope_max``, and the ratio r(N) = m(RMD between) / m(RMD floor) (the floor:
  two runs of one scheme, independent streams) falls with N — the largest log-log slope
  of r over (pair, teacher) is ``< 0`` — and ``max r(N_max) ≤ floor_ratio_max``.  The
  largest ratio over every N and its N (the criterion before the revision) stay shown.
* Claim 1, WI laws preserved (WI start): the largest slope of m(RMD(ν, ν^G)) of vanilla,
  DA, FA is ``≤ wi_slope_max``.
* Claim 2, "shrinks with N" (vanilla: symmetric teachers; random-g DA: every teacher;
  SI start), time-resolved per teacher (:func:`~mfsym.paper.claims.stats.
  time_resolved_shrink`): at every snapshot 0 < t ≤ t_esc(N_min) the slope in N of
  m(RMD(ν_t, P_E#ν_t)) is ``≤ decay_slope_max``, and t_esc does not decrease with N (its
  slope against ln N is ≥ 0; t_esc: first time the seed mean reaches ``escape_min``, T
  when never).  Without the
  curves: the final-time test.  An escape also shows the saddle's evidence
  (:func:`escape_evidence`) and the escape law of the saddle study where one is given.
* Claim 2, "stays on E^G" (FA, orbit-averaged DA, EA; every teacher): the largest
  RMD(ν, P_E#ν) over N, seeds and teachers is ``≤ exact_tol``; otherwise the worst cell is
  rerun in both float types and the rounding test decides between "supported (rounding
  amplified)" and "not supported" (:func:`~mfsym.paper.claims.stats.rounding_test`).
* Claim 3, arbitrary teacher: ``min_N m(RMD(ν, P_E#ν)) ≥ escape_min`` for vanilla.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import xarray as xr

from ..tex import escape_tex, format_exact, format_number, macro_name
from .base import (
    ARBITRARY,
    DA_ORBIT,
    FREE_PAIRS,
    FREE_SCHEMES,
    NOT_MEASURED,
    NOT_SUPPORTED,
    ROUNDING,
    SI,
    SYMMETRIC_TEACHERS,
    TEACHERS,
    WI,
    Claim,
    Criteria,
    PaperInputError,
    not_measured,
    present,
    seed_mean,
    verdict,
)
from .registry import Context, row
from .stats import (
    MACHINE_EPSILON,
    ROUNDING_LEVEL,
    growth_rate,
    largest_slope,
    loglog_slope,
    rounding_test,
    shrinks,
    time_resolved_shrink,
)

SUMMARY_VARIABLES = {
    "rmd_projected": ("init", "N", "teacher", "scheme", "seed"),
    "rmd_symmetrized": ("init", "N", "teacher", "scheme", "seed"),
    "population_risk": ("init", "N", "teacher", "scheme", "seed"),
    "rmd_between": ("init", "N", "teacher", "pair", "seed"),
}


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


def curves_over_n(m: xr.DataArray) -> list[np.ndarray]:
    """One curve over N per label of the other dims of ``m``."""
    others = [d for d in m.dims if d != "N"]
    return list(m.stack(curve=others).transpose("curve", "N").values) if others else [m.values]


def decay_claim(number, key, statement, criterion, m, slope_max, crit, at_max) -> Claim:
    """A claim decided by the largest log-log slope in N of the seed means ``m`` (dims N
    and any others, one curve per other label); ``at_max`` are the values shown before it."""
    slope, ok = shrinks(m.N.values, curves_over_n(m), slope_max, crit.exact_tol)
    values = (*at_max, ("largest slope", slope))
    return Claim(number, key, statement, values, criterion, verdict(ok))


def _symmetric_decay_claim(ds, crit, number, key, statement, criterion, slope_max, var,
                           init, dim, labels) -> Claim:
    teachers = present(ds, "teacher", SYMMETRIC_TEACHERS)
    have = present(ds, dim, labels)
    if init not in ds.init.values or not teachers or not have:
        why = f"no {init} start with symmetric teachers and {', '.join(labels)}"
        return not_measured(number, key, statement, criterion, why)
    m = seed_mean(ds[var].sel(init=init, teacher=teachers, **{dim: have}))
    at_max = ((r"largest RMD at $N_{\max}$", float(m.isel(N=-1).max())),)
    return decay_claim(number, key, statement, criterion, m, slope_max, crit, at_max)


# ---------------------------------------------------------------------------------------
# claim 1
# ---------------------------------------------------------------------------------------
def floor_ratio(ds, init, teachers, pairs) -> xr.DataArray | None:
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
        rf"against $N$ $\le$ {format_exact(crit.decay_slope_max)}; its ratio to the "
        r"same-scheme floor (two vanilla runs, independent streams) falls with $N$ "
        r"(largest slope $<0$) and is $\le$ " + format_exact(crit.floor_ratio_max)
        + r" at $N_{\max}$"
    )
    claim = _symmetric_decay_claim(ds, crit, 1, key, statement, criterion,
                                   crit.decay_slope_max, "rmd_between", init, "pair",
                                   FREE_PAIRS)
    if claim.verdict == NOT_MEASURED:
        return claim
    teachers = present(ds, "teacher", SYMMETRIC_TEACHERS)
    ratios = floor_ratio(ds, init, teachers, present(ds, "pair", FREE_PAIRS))

    def over_n(worst):
        pair, teacher = (escape_tex(str(worst[d].values[0])) for d in ("pair", "teacher"))
        return rf"largest ratio over $N$ ({pair}, {teacher} teacher)"

    return floor_claim(claim, ratios, crit,
                       r"ratio to the floor at $N_{\max}$, largest over pairs and teachers",
                       over_n, r"its $N$")


def floor_claim(claim: Claim, ratios: xr.DataArray | None, crit: Criteria, at_max_label: str,
                over_n: Callable[[xr.DataArray], str], its_n_label: str) -> Claim:
    """Claim 1's floor test on top of ``claim`` (its slope test, already decided): the
    ratios r (N, ...) of the between-scheme distance to the floor fall with N (largest
    log-log slope < 0) and ``max r(N_max) ≤ floor_ratio_max``; "not measured" when
    ``ratios`` is None.  Shown: r at N_max, the slope, the largest r over N (labelled by
    ``over_n(worst)``, the cell of the largest r) and its N."""
    if ratios is None:
        values = (*claim.values, ("largest ratio to the floor", math.nan))
        return replace(claim, values=values, verdict=NOT_MEASURED)
    at_max = float(ratios.isel(N=-1).max())
    trend = largest_slope(ratios.N.values, curves_over_n(ratios))
    worst = ratios.where(ratios == ratios.max(), drop=True)
    values = (*claim.values, (at_max_label, at_max), ("largest slope of the ratio", trend),
              (over_n(worst), float(ratios.max())), (its_n_label, int(worst.N.values[0])))
    ok = (claim.verdict != NOT_SUPPORTED and not math.isnan(trend) and trend < 0
          and at_max <= crit.floor_ratio_max)
    return replace(claim, values=values, verdict=verdict(ok))


@row("grid")
def claim_free_schemes_agree(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    return _agree_claim(ds, crit, SI, "FreeAgree")


@row("grid")
def claim_free_schemes_agree_wi(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    return _agree_claim(ds, crit, WI, "FreeAgreeWI")


@row("grid")
def claim_wi_preserved(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    statement = r"The dynamics stays weakly invariant (WI start, symmetric teachers)."
    criterion = (
        r"largest slope of $m(\mathrm{RMD}(\nu,\nu^G))$ of vanilla, DA, FA against $N$ "
        rf"$\le$ {format_exact(crit.wi_slope_max)}"
    )
    return _symmetric_decay_claim(ds, crit, 1, "WIPreserved", statement, criterion,
                                  crit.wi_slope_max, "rmd_symmetrized", WI, "scheme",
                                  FREE_SCHEMES)


# ---------------------------------------------------------------------------------------
# claim 2: shrinks with N
# ---------------------------------------------------------------------------------------
def escape_evidence(ds: xr.Dataset, scheme: str, teachers: Sequence[str], crit: Criteria
                    ) -> tuple[tuple[str, float], ...]:
    """How an SI-start distance to E^G left E^G, from the summary.

    For the symmetric teacher of ``teachers`` with the largest m(RMD(ν, P_E#ν)) at N_max:
    ``m(R_EA) / m(R_scheme)`` at N_max, the final population risks — EA is the gradient
    flow restricted to E^G, so a ratio above 1 says the free dynamics found a lower risk
    off E^G: the point of E^G that the mean-field flow reaches is a saddle of the risk.
    Empty without EA runs, without the curves or without a symmetric teacher.
    """
    symmetric = [t for t in teachers if t in SYMMETRIC_TEACHERS]
    if "EA" not in ds.scheme.values or "rmd_projected_curve" not in ds or not symmetric:
        return ()
    final = seed_mean(ds.rmd_projected.sel(init=SI, teacher=symmetric, scheme=scheme))
    teacher = str(final.isel(N=-1).idxmax("teacher").item())
    risk = seed_mean(ds.population_risk.sel(init=SI, teacher=teacher)).isel(N=-1)
    name, who = escape_tex(teacher), escape_tex(scheme)
    return ((rf"{name} teacher: $m(R)$ of EA / of {who} at $N_{{\max}}$",
             float(risk.sel(scheme="EA") / risk.sel(scheme=scheme))),)


def saddle_citation(saddle: xr.Dataset | None) -> tuple[tuple[str, float], ...]:
    """The escape law measured by the saddle study (PAPER.md §12), cited by a row that
    finds an escape: b, 1/(2λ) at the reference N and b·2λ."""
    if saddle is None:
        return ()
    return ((r"saddle study: slope $b$ of $t_{\mathrm{esc}}$ against $\ln N$",
             float(saddle["escape_slope"])),
            (r"$1/(2\lambda)$", float(saddle["predicted_slope"])),
            (r"$b\cdot 2\lambda$", float(saddle["law_ratio"])))


def _shrinks_claim(ds, crit, ctx, scheme, teachers_wanted, key, statement) -> Claim:
    criterion = (
        r"at every snapshot $0 < t \le t_{\mathrm{esc}}(N_{\min})$ the slope of "
        r"$m(\mathrm{RMD}(\nu_t,P_E\#\nu_t))$ against $N$ is $\le$ "
        + format_exact(crit.decay_slope_max)
        + r", and $t_{\mathrm{esc}}$ (first $t$ with $m(\mathrm{RMD}) \ge$ "
        + format_exact(crit.escape_min) + r", $T$ if none) does not decrease with $N$ "
        r"(slope against $\ln N$ $\ge 0$)"
    )
    teachers = present(ds, "teacher", teachers_wanted)
    if SI not in ds.init.values or not teachers or scheme not in ds.scheme.values:
        return not_measured(2, key, statement, criterion, f"no SI {scheme} runs")
    m = seed_mean(ds.rmd_projected.sel(init=SI, teacher=teachers, scheme=scheme))
    at_max = tuple(
        (rf"{escape_tex(t)} teacher, $N_{{\max}}$", float(m.sel(teacher=t).isel(N=-1)))
        for t in teachers
    )
    final = decay_claim(2, key, statement, criterion, m, crit.decay_slope_max, crit, at_max)
    final = replace(final, values=(*at_max, ("largest slope at $T$", final.values[-1][1])))
    if "rmd_projected_curve" not in ds:
        return final
    curves = seed_mean(ds.rmd_projected_curve.sel(init=SI, teacher=teachers, scheme=scheme))
    time = curves.time.values
    tests = {t: time_resolved_shrink(time, curves.N.values,
                                     curves.sel(teacher=t).transpose("N", "time").values,
                                     crit.decay_slope_max, crit.escape_min, crit.exact_tol)
             for t in teachers}
    oks = [r.ok for r in tests.values()]
    ok = None if any(o is None for o in oks) else all(oks)
    worst_t = max(tests, key=lambda t: -math.inf if math.isnan(tests[t].worst_slope)
                  else tests[t].worst_slope)
    first = min(tests, key=lambda t: tests[t].horizon)
    r = tests[first]
    values = (*final.values,
              (r"largest slope at $0<t\le t_{\mathrm{esc}}(N_{\min})$ (" + escape_tex(worst_t)
               + r" teacher, $t =$ " + format_number(tests[worst_t].worst_time) + ")",
               tests[worst_t].worst_slope),
              (rf"{escape_tex(first)} teacher: $t_{{\mathrm{{esc}}}}(N_{{\min}})$", r.horizon),
              (r"$t_{\mathrm{esc}}(N_{\max})$", float(r.t_esc[-1])),
              (r"slope of $t_{\mathrm{esc}}$ against $\ln N$", r.escape_trend),
              (r"$t_{\mathrm{esc}}$ non-decreasing from each $N$ to the next (1 = yes)",
               int(all(x.monotone for x in tests.values()))))
    if any(x.escaped for x in tests.values()):
        values += escape_evidence(ds, scheme, teachers, crit) + saddle_citation(ctx.saddle)
    return Claim(2, key, statement, values, criterion, verdict(ok))


@row("grid")
def claim_vanilla_shrinks(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    statement = (
        r"SI laws are preserved in the mean-field limit: with an SI start, vanilla's "
        r"distance to $E^G$ shrinks as $N$ grows at each fixed time (symmetric teachers)."
    )
    return _shrinks_claim(ds, crit, ctx, "vanilla", SYMMETRIC_TEACHERS, "VanillaShrinks",
                          statement)


@row("grid")
def claim_da_shrinks(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    statement = (
        r"Random-$g$ DA is a finite-$N$ SGD too: with an SI start its distance to $E^G$ "
        r"shrinks as $N$ grows at each fixed time, for the symmetric teachers and the "
        r"arbitrary one."
    )
    return _shrinks_claim(ds, crit, ctx, "DA", TEACHERS, "DAShrinks", statement)


# ---------------------------------------------------------------------------------------
# claim 2: stays on E^G
# ---------------------------------------------------------------------------------------
def _stays_from_noether(invariance, crit, key, statement, criterion) -> Claim | None:
    """The DA-orbit row from the Noether invariance study, or None without it."""
    if invariance is None or DA_ORBIT not in map(str, invariance.scheme.values):
        return None
    if "online" not in map(str, invariance["mode"].values):
        return None
    worst = float(invariance["dist_fixed"].sel(scheme=DA_ORBIT, mode="online")
                  .isel(time=-1).max())
    values = ((r"largest RMS distance to $E^G$ (Noether study, online)", worst),)
    return Claim(2, key, statement + r" Source: the Noether invariance study.", values,
                 criterion.replace(r"$\mathrm{RMD}(\nu,P_E\#\nu)$ over $N$, seeds, teachers",
                                   r"RMS distance to $E^G$ at the last time"),
                 verdict(worst <= crit.exact_tol))


def departure_evidence(ds: xr.Dataset, scheme: str, teachers: Sequence[str]
                       ) -> tuple[tuple[str, float], ...]:
    """Where the largest SI-start RMD(ν, P_E#ν) of ``scheme`` comes from: the N of the
    largest distance over N, seeds and ``teachers``; the largest distance at every other N
    (NaN with one N); and, with the runs' ``rmd_projected_curve``, the growth rate λ
    (:func:`~mfsym.paper.claims.stats.growth_rate`) of that run's curve."""
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


def worst_cell(da: xr.DataArray, **fixed) -> dict:
    """The labels of the largest entry of ``da`` (dims N, teacher, seed and any others),
    with ``fixed`` labels added: the cell the precision swap reruns."""
    worst = da.where(da == da.max(), drop=True)
    cell = {d: worst[d].values[0].item() for d in worst.dims}
    return {**fixed, **cell}


def precision_swap(ctx: Context, cell: dict, crit: Criteria
                   ) -> tuple[tuple[tuple[str, float], ...], bool | None]:
    """Rerun ``cell`` in both float types and apply the rounding test; (values, ok) with
    ok None when no rerun is available."""
    if ctx.rerun is None:
        return ((r"precision swap: not run", math.nan),), None
    curves = {p: ctx.rerun(ctx.stage, cell, p) for p in MACHINE_EPSILON}
    test = rounding_test(curves, crit.escape_min, crit.rounding_rate_tol,
                         crit.rounding_ratio_tol)
    values = (
        (r"rerun, final RMD in float32", float(curves["float32"][1][-1])),
        (r"in float64", float(curves["float64"][1][-1])),
        (r"growth rate $\lambda$, float32", test.rates["float32"]),
        (r"float64", test.rates["float64"]),
        (r"relative difference of the rates", test.rate_difference),
        (r"departure ratio float32/float64 at $t =$ " + format_number(test.at),
         test.departure_ratio),
        (r"$\varepsilon$ ratio", test.epsilon_ratio),
    )
    return values, test.ok


def stays_on_eg(ds: xr.Dataset, scheme: str, crit: Criteria, ctx: Context) -> Claim:
    """The "stays on E^G" row of ``scheme`` (module docstring)."""
    what = {"EA": r"by construction", "FA": r"equivariant drift",
            DA_ORBIT: r"orbit-averaged DA, equivariant drift"}.get(scheme, "")
    statement = (rf"With an SI start, {escape_tex(scheme)} stays on $E^G$ at every $N$ "
                 rf"({what}; every teacher).")
    criterion = (
        r"largest $\mathrm{RMD}(\nu,P_E\#\nu)$ over $N$, seeds, teachers $\le$ "
        + format_exact(crit.exact_tol)
        + r"; above it, the worst run rerun in float32 and float64 grows at one rate "
        r"(within " + format_exact(100 * crit.rounding_rate_tol) + r"\,\%) and the ratio "
        r"of the two departures is within " + format_exact(crit.rounding_ratio_tol)
        + r"$\times$ of $\varepsilon_{32}/\varepsilon_{64}$: rounding amplified"
    )
    key = macro_name(scheme, "OnEG", prefix="")
    teachers = list(ds.teacher.values)
    if SI not in ds.init.values or not teachers or scheme not in ds.scheme.values:
        if scheme == DA_ORBIT:
            fallback = _stays_from_noether(ctx.invariance, crit, key, statement, criterion)
            if fallback is not None:
                return fallback
        return not_measured(2, key, statement, criterion, f"no SI {scheme} runs")
    final = ds.rmd_projected.sel(init=SI, teacher=teachers, scheme=scheme)
    worst = float(final.max())
    values = ((r"largest RMD", worst),)
    if scheme == DA_ORBIT:
        statement += r" Source: the grid."
    if worst <= crit.exact_tol:
        return Claim(2, key, statement, values, criterion, verdict(True))
    values += departure_evidence(ds, scheme, teachers)
    swap, ok = precision_swap(ctx, worst_cell(final, init=SI, scheme=scheme), crit)
    return Claim(2, key, statement, values + swap, criterion,
                 ROUNDING if ok else NOT_SUPPORTED)


@row("grid")
def claim_fa_stays_on_eg(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    return stays_on_eg(ds, "FA", crit, ctx)


@row("grid")
def claim_da_orbit_stays_on_eg(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    return stays_on_eg(ds, DA_ORBIT, crit, ctx)


@row("grid")
def claim_ea_stays_on_eg(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    return stays_on_eg(ds, "EA", crit, ctx)


# ---------------------------------------------------------------------------------------
# claim 3
# ---------------------------------------------------------------------------------------
@row("grid")
def claim_arbitrary_escapes(ds: xr.Dataset, crit: Criteria, ctx: Context) -> Claim:
    statement = r"With an arbitrary teacher, vanilla leaves $E^G$ at every $N$ (SI start)."
    criterion = (
        r"$\min_N m(\mathrm{RMD}(\nu,P_E\#\nu))$ $\ge$ " + format_exact(crit.escape_min)
    )
    if (
        SI not in ds.init.values
        or ARBITRARY not in ds.teacher.values
        or "vanilla" not in ds.scheme.values
    ):
        return not_measured(3, "ArbitraryEscapes", statement, criterion, "no arbitrary teacher")
    m = seed_mean(ds.rmd_projected.sel(init=SI, teacher=ARBITRARY, scheme="vanilla")).values
    lowest = float(m.min())
    values = (
        (r"smallest RMD over $N$", lowest),
        ("slope", loglog_slope(ds.N.values, m)),
    )
    return Claim(3, "ArbitraryEscapes", statement, values, criterion,
                 verdict(lowest >= crit.escape_min))
