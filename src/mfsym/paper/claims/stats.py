"""The statistics the claim families share: slopes in N, the time-resolved "shrinks with N"
test, the trend of claim 1's ratio to its floor, and the rounding test of the "stays on E^G"
rows (PAPER.md §1, revised).  The curve primitives are :mod:`mfsym.measure.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...measure.escape import exponential_rate, first_crossing, linear_slope, loglog_slope

__all__ = [
    "MACHINE_EPSILON", "ROUNDING_FLOOR", "ROUNDING_LEVEL", "RoundingTest", "TimeResolved",
    "escape_times", "growth_rate", "largest_slope", "loglog_slope", "rounding_test",
    "shrinks", "time_resolved_shrink",
]

#: Distances below this are float64 rounding level (the old single-precision-blind fit).
ROUNDING_LEVEL = 1e-14
#: Unit roundoff ε of each float type.
MACHINE_EPSILON = {"float32": float(np.finfo(np.float32).eps),
                   "float64": float(np.finfo(np.float64).eps)}
#: A departure is fitted from this many ε upwards: below it the curve is rounding noise.
ROUNDING_FLOOR = 100.0


def largest_slope(n, curves: Sequence[np.ndarray]) -> float:
    """The largest :func:`loglog_slope` of the curves over ``n`` (NaN if any is undefined
    or there is none)."""
    slopes = [loglog_slope(n, c) for c in curves]
    if not slopes or any(math.isnan(s) for s in slopes):
        return math.nan
    return max(slopes)


def shrinks(n, curves: Sequence[np.ndarray], slope_max: float, tol: float):
    """(largest slope, ok) for curves m(q)(N): ok when every curve is at most ``tol`` at
    every N (already collapsed) or the largest slope is ``≤ slope_max``; ok is None when
    no slope is defined."""
    if all(float(np.max(c)) <= tol for c in curves):
        return max((loglog_slope(n, c) for c in curves), default=math.nan), True
    worst = largest_slope(n, curves)
    return worst, (None if math.isnan(worst) else worst <= slope_max)


def escape_times(time, curves: np.ndarray, level: float) -> np.ndarray:
    """t_esc per row of ``curves`` (N, time): the first snapshot time at which the row
    reaches ``level``, and the last time T where it never does (PAPER.md §1)."""
    time = np.asarray(time, dtype=np.float64)
    out = [first_crossing(time, row, level) for row in np.asarray(curves, dtype=np.float64)]
    return np.array([float(time[-1]) if math.isnan(t) else t for t in out])


@dataclass(frozen=True)
class TimeResolved:
    """The time-resolved "shrinks with N" test of one curve family d_N(t).

    t_esc: (N,) escape times (T where none); horizon: t_esc(N_min), the last time tested;
    worst_slope: the largest log-log slope in N over the tested times 0 < t ≤ horizon (NaN
    when none is defined); worst_time: where it is; final_slope: the slope at T (the
    criterion before the revision); escaped: whether some N reaches the level within T;
    escape_trend: the least-squares slope of t_esc against ln N; monotone: t_esc
    non-decreasing from each N to the next (shown, not decisive); ok: the verdict (None:
    not measurable).
    """

    t_esc: np.ndarray
    horizon: float
    worst_slope: float
    worst_time: float
    final_slope: float
    escaped: bool
    escape_trend: float
    monotone: bool
    ok: bool | None


def time_resolved_shrink(time, n, curves: np.ndarray, slope_max: float, level: float,
                         tol: float) -> TimeResolved:
    """Decide "d_N(t) shrinks with N at each fixed time t" on ``curves`` (N, time), seed
    means at the snapshot ``time`` (ascending, the last one T) for the ascending ``n``.

    The tested times are the snapshots with 0 < t ≤ t_esc(N_min) at which every N has
    left its start (a small N whose first step comes after t is still at distance 0 there);
    at each the slope of ``log d`` against ``log N`` must be ``≤ slope_max`` (a time at
    which every N is at most ``tol`` passes: the distance is at rounding level), and t_esc
    must not decrease with N: its least-squares slope against ln N (the trend, as every
    "in N" statement of the table is a fitted slope) is ``≥ 0``.  The pairwise order is
    reported beside it: at the smallest N a width's first step comes at t = 1/N, and
    where its fluctuation level already exceeds ``level`` it crosses at about its first
    step, earlier the larger N — an order set by the time step, not by an escape.
    Without an escape the tested times run up to T.
    """
    time = np.asarray(time, dtype=np.float64)
    curves = np.asarray(curves, dtype=np.float64)
    t_esc = escape_times(time, curves, level)
    horizon = float(t_esc[0])
    tested = np.flatnonzero((time > 0) & (time <= horizon))
    slopes = {}
    for k in tested:
        col = curves[:, k]
        if np.all(col <= tol):
            slopes[k] = -math.inf  # every N still at rounding level: nothing to shrink
        elif np.all(col > 0):
            slopes[k] = loglog_slope(n, col)
        # else: some N is still exactly at its SI start (its first step comes later, the
        # snapshot's step N·t rounds to 0): no distance to compare at this time
    finite = {k: s for k, s in slopes.items() if not math.isnan(s)}
    if not slopes or len(finite) < len(slopes):
        worst, at, ok = math.nan, math.nan, None
    else:
        k = max(finite, key=finite.get)
        worst, at = finite[k], float(time[k])
        ok = worst <= slope_max
    monotone = bool(np.all(np.diff(t_esc) >= 0))
    trend = linear_slope(np.log(np.asarray(n, dtype=np.float64)), t_esc)
    escaped = bool(np.any(np.asarray(curves) >= level))
    if ok is not None:
        ok = ok and not math.isnan(trend) and trend >= 0
    if worst == -math.inf:
        worst = math.nan
    return TimeResolved(t_esc, horizon, worst, at, loglog_slope(n, curves[:, -1]), escaped,
                        trend, monotone, ok)


def growth_rate(time, curve) -> float:
    """Least-squares slope λ of ``log d(t)`` against t over the snapshots with
    ``d(t) ≥ ROUNDING_LEVEL``, so ``d(t) ∝ e^{λ t}`` there; NaN with fewer than two."""
    t = np.asarray(time, dtype=np.float64)
    d = np.asarray(curve, dtype=np.float64)
    keep = np.isfinite(d) & (d >= ROUNDING_LEVEL)
    if keep.sum() < 2 or np.ptp(t[keep]) == 0:
        return math.nan
    return float(np.polyfit(t[keep], np.log(d[keep]), 1)[0])


@dataclass(frozen=True)
class RoundingTest:
    """The precision swap of a "stays on E^G" row (PAPER.md §1).

    rates: {dtype: λ}, each fitted (:func:`mfsym.measure.escape.exponential_rate`) on the
    window where ``ROUNDING_FLOOR·ε_dtype ≤ d(t) ≤ hi`` — on the span of times common to
    the two windows when they overlap by at least three snapshots each (a departure along
    a moving trajectory need not grow at one rate at all times), else each on its own;
    windows: {dtype: (start, end)} of the fits;
    at: the common time t* of the comparison (the middle of the overlap of the windows, or
    of the gap between them); departure_ratio: d_float32(t*) / d_float64(t*) from the two
    fitted lines; epsilon_ratio: ε_float32 / ε_float64; rate_difference: |λ₃₂ − λ₆₄| /
    max(|λ₃₂|, |λ₆₄|); ratio_factor: max(q, 1/q) with q = departure_ratio / epsilon_ratio;
    ok: rate_difference ≤ rate_tol and ratio_factor ≤ ratio_tol (False when unfitted).
    """

    rates: dict
    windows: dict
    at: float
    departure_ratio: float
    epsilon_ratio: float
    rate_difference: float
    ratio_factor: float
    ok: bool


def _fit_line(time, curve, lo, hi, span=None):
    """(λ, intercept, window) of ``log d = intercept + λ t`` on the exponential phase of
    ``curve`` between ``lo`` and ``hi``, restricted to the times in ``span`` when given."""
    t = np.asarray(time, dtype=np.float64)
    d = np.asarray(curve, dtype=np.float64)
    if span is not None:
        keep = (t >= span[0]) & (t <= span[1])
        t, d = t[keep], d[keep]
    rate, start, end = exponential_rate(t, d, lo, hi)
    if math.isnan(rate):
        return math.nan, math.nan, (math.nan, math.nan)
    inside = (t >= start) & (t <= end)
    intercept = float(np.mean(np.log(d[inside]) - rate * t[inside]))
    return rate, intercept, (start, end)


def rounding_test(curves: dict, hi: float, rate_tol: float, ratio_tol: float) -> RoundingTest:
    """Compare the departures from E^G of one run trained in both precisions.

    ``curves``: {"float32": (time, d), "float64": (time, d)}, the RMD to the projection on
    E^G at each snapshot.  When the departure is rounding amplified by a transversally
    unstable E^G, both grow at the unstable rate of the discrete map, d_p(t) ≈ c·ε_p·e^{λt},
    so the rates agree and d₃₂/d₆₄ ≈ ε₃₂/ε₆₄ at any common time (:class:`RoundingTest`).
    """
    if set(curves) != set(MACHINE_EPSILON):
        raise ValueError(f"the rounding test needs curves for {sorted(MACHINE_EPSILON)}, "
                         f"got {sorted(curves)}")
    lo = {p: ROUNDING_FLOOR * MACHINE_EPSILON[p] for p in MACHINE_EPSILON}
    fits = {p: _fit_line(*curves[p], lo[p], hi) for p in MACHINE_EPSILON}
    start = max(f[2][0] for f in fits.values())
    end = min(f[2][1] for f in fits.values())
    if end > start:  # both exponential over a common span: compare the rates there
        common = {p: _fit_line(*curves[p], lo[p], hi, (start, end)) for p in MACHINE_EPSILON}
        if not any(math.isnan(f[0]) for f in common.values()):
            fits = common
    rates = {p: f[0] for p, f in fits.items()}
    windows = {p: f[2] for p, f in fits.items()}
    eps = MACHINE_EPSILON["float32"] / MACHINE_EPSILON["float64"]
    if any(math.isnan(r) for r in rates.values()):
        return RoundingTest(rates, windows, math.nan, math.nan, eps, math.nan, math.nan, False)
    (s32, e32), (s64, e64) = windows["float32"], windows["float64"]
    lo, up = max(s32, s64), min(e32, e64)
    at = 0.5 * (lo + up)  # the overlap's middle, or the gap's when they do not overlap
    logs = {p: fits[p][1] + fits[p][0] * at for p in fits}
    ratio = math.exp(logs["float32"] - logs["float64"])
    r32, r64 = rates["float32"], rates["float64"]
    rate_diff = abs(r32 - r64) / max(abs(r32), abs(r64))
    q = ratio / eps
    factor = max(q, 1.0 / q)
    ok = bool(rate_diff <= rate_tol and factor <= ratio_tol)
    return RoundingTest(rates, windows, at, ratio, eps, rate_diff, factor, ok)
