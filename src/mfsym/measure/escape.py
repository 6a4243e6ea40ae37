"""Statistics of a distance curve d(t) and of a family d_N(t): crossings, exponential rates,
power laws in N.

Every function takes plain arrays (no datasets), so the claims table, the saddle study
(:mod:`mfsym.studies.saddle`) and a user's own analysis compute them one way.

* :func:`loglog_slope`: least-squares slope s of ``log y`` against ``log n``,
  ``s = Σ (l_k − l̄)(y_k − ȳ) / Σ (l_k − l̄)²`` with ``l = log n``, ``y = log y`` — so
  ``y ∝ n^s``; NaN unless two distinct n and positive finite y.
* :func:`first_crossing`: the first time ``t_k`` with ``d(t_k) ≥ level`` (NaN if none).
* :func:`exponential_rate`: λ of ``d(t) ∝ e^{λ t}``, the least-squares slope of ``log d``
  against t over the window of snapshots with ``lo ≤ d(t) ≤ hi``, and that window.
* :func:`linear_slope`: least-squares slope of y against x (the escape law's b against ln N).
"""

from __future__ import annotations

import math

import numpy as np


def _vector(name: str, value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _same_length(x: np.ndarray, y: np.ndarray, names: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{names} must have equal length, got {x.shape} and {y.shape}")


def linear_slope(x, y) -> float:
    """Least-squares slope of y against x over the finite pairs; NaN with fewer than two
    distinct x."""
    x, y = _vector("x", x), _vector("y", y)
    _same_length(x, y, "x and y")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if np.unique(x).size < 2:
        return math.nan
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc**2).sum())


def loglog_slope(n, y) -> float:
    """Least-squares slope of ``log y`` against ``log n`` (NaN if it is not defined)."""
    n, y = _vector("n", n), _vector("y", y)
    _same_length(n, y, "n and y")
    if (
        np.unique(n).size < 2
        or not np.all(np.isfinite(y))
        or np.any(y <= 0)
        or np.any(n <= 0)
    ):
        return math.nan
    return linear_slope(np.log(n), np.log(y))


def first_crossing(time, curve, level: float) -> float:
    """The first snapshot time t_k with ``curve[k] ≥ level``; NaN when the curve never
    reaches it (non-finite values never count as reaching it)."""
    t, d = _vector("time", time), _vector("curve", curve)
    _same_length(t, d, "time and curve")
    hit = np.isfinite(d) & (d >= level)
    return float(t[np.argmax(hit)]) if hit.any() else math.nan


def exponential_rate(time, curve, lo: float, hi: float, min_points: int = 3
                     ) -> tuple[float, float, float]:
    """(λ, t_start, t_end): the least-squares slope of ``log d`` against t over the first
    run of consecutive snapshots with ``lo ≤ d(t) ≤ hi`` that has at least ``min_points``
    points, and the first and last time of that window — the exponential phase of a curve
    that rises from a floor ``lo`` to a level ``hi``.  All three NaN when no such run
    exists."""
    t, d = _vector("time", time), _vector("curve", curve)
    _same_length(t, d, "time and curve")
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo!r}, hi={hi!r}")
    inside = np.isfinite(d) & (d >= lo) & (d <= hi)
    k = 0
    while k < t.size:
        if not inside[k]:
            k += 1
            continue
        end = k
        while end + 1 < t.size and inside[end + 1]:
            end += 1
        if end - k + 1 >= min_points:
            window = slice(k, end + 1)
            return linear_slope(t[window], np.log(d[window])), float(t[k]), float(t[end])
        k = end + 1
    return math.nan, math.nan, math.nan
