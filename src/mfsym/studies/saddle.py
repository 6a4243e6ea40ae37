"""The saddle on E^G and the ln N law of escape (PAPER.md §12): statistics of a family of
distance curves d_N(t), N = n_1 < … < n_M, with S seeds each.

When the SI-restricted flow reaches a point of E^G that is a saddle of the risk over all
laws, vanilla's finite-N cloud sits at a distance ~ N^{-1/2} from E^G and that transverse
deviation grows like e^{λ t}; before escape ``d_N(t) ≈ A(t)·N^{-1/2}`` and the first time
the distance reaches a level δ is ``t_esc(N) ≈ t₀ + ln N / (2λ)``.

Inputs (plain arrays): ``time`` (K,) strictly increasing snapshot times; ``n`` (M,)
strictly increasing numbers of particles; ``curves`` (M, S, K) = d_N(t) per N, seed and
time (vanilla's RMD to its projection on E^G in the saddle study).  ``m_N(t)`` below is
the seed mean ``curves[i].mean(axis=0)`` (K,).  Every statistic uses the shared primitives
of :mod:`mfsym.measure.escape`.

* **Escape time** ``t_esc(N)`` = :func:`~mfsym.measure.escape.first_crossing` of m_N at δ:
  the first snapshot time with ``m_N(t_k) ≥ δ``; NaN when m_N never reaches δ within the
  recorded times ("no escape").  Per seed: the same on each curve (N, S).
* **Rate** λ_N: :func:`~mfsym.measure.escape.exponential_rate` (least-squares slope of
  ``ln d`` against t) over the *escape window* of m_N: the last stretch of snapshots before
  t_esc(N) on which ``floor ≤ d < δ`` — from the first snapshot after the last one below
  ``floor`` (or the first snapshot) to the last snapshot before t_esc.  Its first and last
  time are the window (edge ``start``, ``end``).  NaN when N does not escape or the window
  has fewer than 3 snapshots.  Per seed: the same on each curve.
* **Collapse spread**: with ``c_N(t) = √N · m_N(t)`` and the times ``0 < t_k < t₁``, where
  ``t₁ = min_N t_esc(N)`` is the first escape (t_esc(N_min) when escape times rise with N;
  +∞, i.e. every positive time, when no N escapes) and every ``c_N(t_k)`` is finite with a
  positive median over N::

      spread(t_k) = (max_N c_N(t_k) − min_N c_N(t_k)) / median_N c_N(t_k)
      collapse_spread = max_k spread(t_k)

  0 when the rescaled curves coincide; NaN with fewer than two N or no such time.
  ``collapse_spread_time`` is the t_k of the maximum, ``collapse_spread_curve`` (K,) is
  ``spread(t_k)`` itself (NaN outside those times).  It holds the seeds' scatter of the
  means too, and at the first snapshots a small N has taken only a few steps.
* **Law**: ``b`` = :func:`~mfsym.measure.escape.linear_slope` of t_esc(N) against ln N over
  the N that escape (NaN with fewer than two); ``λ_ref`` = λ of the largest escaping N
  (``reference_N``), ``λ_med`` = the median of the finite λ_N over escaping N; the predicted
  slopes ``1/(2 λ_ref)`` and ``1/(2 λ_med)``; the ratios ``b·2λ_ref`` (``law_ratio``) and
  ``b·2λ_med`` (``law_ratio_median``), 1 when the law holds with one rate.
* **Intervals** (coordinate ``bound`` = low, high): a percentile bootstrap over seeds.  Each
  of ``bootstrap`` resamples draws, for every N independently (the runs at different N are
  independent), S seed indices with replacement (``numpy.random.default_rng([seed, 0])``),
  recomputes the seed-mean curves and every statistic above from them (λ_ref at the same
  ``reference_N``), and the interval is the ``(1 ∓ confidence)/2`` quantiles of the finite
  resampled values (NaN when none is finite, or ``bootstrap = 0``).  The same seed gives
  the same interval.

:func:`risk_ratios` gives the saddle's other signature: for each scheme held on E^G (FA,
EA), the seed-mean final population risk over vanilla's, per N, with its paired bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..measure.escape import exponential_rate, first_crossing, linear_slope
from ..records.results import variable

BOUNDS = ("low", "high")
EDGES = ("start", "end")
#: Fewest snapshots of an escape window with a rate (:func:`exponential_rate`'s default).
MIN_WINDOW = 3
#: Variables of :func:`escape_analysis` that may hold NaN: each means "no escape" (or too
#: few escaping N / window snapshots for the statistic), as documented in the module.
NONFINITE = (
    "escape_time", "escape_time_seed", "escape_time_interval",
    "growth_rate", "growth_rate_window", "growth_rate_seed", "growth_rate_interval",
    "collapse_spread", "collapse_spread_interval", "collapse_spread_time",
    "collapse_spread_curve",
    "escape_slope", "escape_slope_interval",
    "predicted_slope", "predicted_slope_interval",
    "predicted_slope_median", "predicted_slope_median_interval",
    "law_ratio", "law_ratio_interval", "law_ratio_median", "law_ratio_median_interval",
)


def _check_inputs(time, n, curves, delta, floor, bootstrap, confidence):
    time = np.asarray(time, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    curves = np.asarray(curves, dtype=np.float64)
    if time.ndim != 1 or time.size < 2 or np.any(np.diff(time) <= 0):
        raise ValueError("time must be 1-D, strictly increasing, with at least two snapshots")
    if n.ndim != 1 or n.size < 1 or np.any(n <= 0) or np.any(np.diff(n) <= 0):
        raise ValueError(f"n must be 1-D, positive and strictly increasing, got {n.tolist()}")
    if curves.ndim != 3 or curves.shape[::2] != (n.size, time.size) or curves.shape[1] < 1:
        raise ValueError(f"curves must have shape (N, seed, time) = ({n.size}, S ≥ 1, "
                         f"{time.size}), got {curves.shape}")
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta = {delta!r} must be a number > 0")
    if not (math.isfinite(floor) and 0 < floor < delta):
        raise ValueError(f"floor = {floor!r} must lie in (0, delta = {delta!r})")
    if int(bootstrap) != bootstrap or bootstrap < 0:
        raise ValueError(f"bootstrap = {bootstrap!r} must be an integer ≥ 0")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence!r} must lie in (0, 1)")
    return time, n, curves


def escape_window_rate(time, curve, floor: float, delta: float) -> tuple[float, float, float]:
    """(λ, t_start, t_end) of one curve (K,) over its escape window (module docstring);
    all NaN when the curve does not reach ``delta`` or the window is too short."""
    t, d = np.asarray(time, dtype=np.float64), np.asarray(curve, dtype=np.float64)
    t_esc = first_crossing(t, d, delta)
    if math.isnan(t_esc):
        return math.nan, math.nan, math.nan
    k_esc = int(np.searchsorted(t, t_esc))
    before = d[:k_esc]
    below = np.nonzero(~(np.isfinite(before) & (before >= floor)))[0]
    start = int(below[-1]) + 1 if below.size else 0
    return exponential_rate(t[start:k_esc], d[start:k_esc], floor, delta, MIN_WINDOW)


def spread_curve(time, n, mean_curves, first_escape: float) -> np.ndarray:
    """``spread(t_k)`` (K,) of ``√N · m_N(t_k)`` over N (module docstring) at the times
    ``0 < t_k < first_escape`` with finite rescaled curves and a positive median; NaN at the
    other times, and everywhere with fewer than two N.  ``mean_curves`` (M, K)."""
    t, n = np.asarray(time, dtype=np.float64), np.asarray(n, dtype=np.float64)
    out = np.full(t.size, np.nan)
    if n.size < 2:
        return out
    scaled = np.sqrt(n)[:, None] * np.asarray(mean_curves, dtype=np.float64)
    end = math.inf if math.isnan(first_escape) else first_escape
    finite = np.all(np.isfinite(scaled), axis=0)
    median = np.median(np.where(finite, scaled, 0.0), axis=0)
    use = (t > 0) & (t < end) & finite & (median > 0)
    out[use] = (scaled.max(axis=0) - scaled.min(axis=0))[use] / median[use]
    return out


def collapse_spread(time, n, mean_curves, first_escape: float) -> tuple[float, float]:
    """(largest spread, its time): the maximum of :func:`spread_curve`; NaN, NaN when it is
    nowhere defined."""
    curve = spread_curve(time, n, mean_curves, first_escape)
    if not np.isfinite(curve).any():
        return math.nan, math.nan
    k = int(np.nanargmax(curve))
    return float(curve[k]), float(np.asarray(time, dtype=np.float64)[k])


def _escape_times(time, mean_curves, delta) -> np.ndarray:
    return np.array([first_crossing(time, m, delta) for m in mean_curves])


def _reference(escape_time: np.ndarray) -> int | None:
    """Index of the largest N that escapes (None: none does)."""
    escaped = np.nonzero(np.isfinite(escape_time))[0]
    return int(escaped[-1]) if escaped.size else None


def _statistics(time, n, mean_curves, delta, floor, reference: int | None) -> dict:
    """Every statistic of the module from the seed-mean curves ``mean_curves`` (M, K);
    λ_ref is the rate of N index ``reference`` (None: undefined, NaN)."""
    t_esc = _escape_times(time, mean_curves, delta)
    fits = np.array([escape_window_rate(time, m, floor, delta) for m in mean_curves])
    rate = fits[:, 0]
    escaped = np.isfinite(t_esc)
    first = float(np.min(t_esc[escaped])) if escaped.any() else math.nan
    spread, spread_time = collapse_spread(time, n, mean_curves, first)
    b = linear_slope(np.log(n[escaped]), t_esc[escaped])
    lam_ref = rate[reference] if reference is not None else math.nan
    finite = rate[escaped & np.isfinite(rate)]
    lam_med = float(np.median(finite)) if finite.size else math.nan
    return {
        "escape_time": t_esc, "growth_rate": rate, "growth_rate_window": fits[:, 1:],
        "collapse_spread": spread, "collapse_spread_time": spread_time,
        "first_escape": first,
        "escape_slope": b,
        "predicted_slope": _half_inverse(lam_ref), "predicted_slope_median": _half_inverse(lam_med),
        "law_ratio": 2.0 * b * lam_ref, "law_ratio_median": 2.0 * b * lam_med,
        "escaped_n": int(escaped.sum()),
    }


def _half_inverse(rate: float) -> float:
    return 1.0 / (2.0 * rate) if math.isfinite(rate) and rate != 0 else math.nan


def percentile_interval(samples, confidence: float, axis: int = 0) -> np.ndarray:
    """The ``(1 − confidence)/2`` and ``(1 + confidence)/2`` quantiles of the finite
    ``samples`` along ``axis`` (that axis replaced by a last one of size 2, low and high);
    NaN where no sample is finite."""
    s = np.moveaxis(np.asarray(samples, dtype=np.float64), axis, -1)
    out = np.full((*s.shape[:-1], 2), np.nan)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    for idx in np.ndindex(s.shape[:-1]):
        v = s[idx]
        v = v[np.isfinite(v)]
        if v.size:
            out[idx] = np.quantile(v, q)
    return out


BOOTSTRAPPED = ("escape_time", "growth_rate", "collapse_spread", "escape_slope",
                "predicted_slope", "predicted_slope_median", "law_ratio", "law_ratio_median")


def escape_analysis(time, n, curves, delta: float, floor: float, bootstrap: int, seed: int,
                    confidence: float, seeds: Sequence[int] | None = None) -> xr.Dataset:
    """The escape statistics of ``curves`` (M, S, K) = d_N(t) (module docstring), as a
    dataset with coordinates ``N`` (M), ``seed`` (S; ``seeds`` or 0…S−1), ``time`` (K),
    ``bound`` (low, high) and ``edge`` (start, end):

    ``escape_time`` (N), ``escape_time_seed`` (N, seed), ``escape_time_interval`` (N, bound);
    ``growth_rate`` (N), ``growth_rate_window`` (N, edge), ``growth_rate_seed`` (N, seed),
    ``growth_rate_interval`` (N, bound); ``collapse_spread``, ``collapse_spread_time`` and
    ``collapse_spread_interval`` (bound), ``collapse_spread_curve`` (time);
    ``escape_slope`` (b), ``predicted_slope`` (1/(2λ_ref)), ``predicted_slope_median``
    (1/(2λ_med)), ``law_ratio`` (b·2λ_ref), ``law_ratio_median`` (b·2λ_med), each () with
    its ``_interval`` (bound).

    Attributes: ``delta``, ``floor``, ``escaped_n`` (how many N escape; 0: no escape in this
    setting, and every statistic but the collapse spread is NaN), ``reference_N`` (the
    largest escaping N, 0 when none), ``bootstrap``, ``bootstrap_seed``, ``confidence``.
    NaN only where the module docstring says so (:data:`NONFINITE`).
    """
    time, n, curves = _check_inputs(time, n, curves, float(delta), float(floor), bootstrap,
                                    float(confidence))
    m_count, s_count, _ = curves.shape
    mean = curves.mean(axis=1)
    ref = _reference(_escape_times(time, mean, delta))
    point = _statistics(time, n, mean, delta, floor, ref)
    per_seed = np.array([[escape_window_rate(time, c, floor, delta) for c in row]
                         for row in curves])
    t_seed = np.array([[first_crossing(time, c, delta) for c in row] for row in curves])

    rng = np.random.default_rng([int(seed), 0])
    draws = {name: [] for name in BOOTSTRAPPED}
    rows = np.arange(m_count)[:, None]
    for _ in range(int(bootstrap)):
        pick = rng.integers(0, s_count, size=(m_count, s_count))
        stats = _statistics(time, n, curves[rows, pick].mean(axis=1), delta, floor, ref)
        for name in BOOTSTRAPPED:
            draws[name].append(stats[name])
    interval = {
        name: (percentile_interval(np.asarray(v, dtype=np.float64), confidence) if bootstrap
               else np.full(np.shape(point[name]) + (2,), np.nan))
        for name, v in draws.items()
    }

    def with_interval(name, dims, long_name, units="1"):
        return {
            name: variable(dims, point[name], long_name, units),
            f"{name}_interval": variable(
                (*dims, "bound"), interval[name],
                f"{long_name}: {confidence:g} bootstrap interval over seeds", units),
        }

    data = {
        **with_interval("escape_time", ("N",),
                        f"first time the seed-mean distance reaches delta = {delta:g} "
                        "(NaN: no escape)"),
        "escape_time_seed": variable(("N", "seed"), t_seed,
                                     f"first time each seed's distance reaches delta = "
                                     f"{delta:g} (NaN: no escape)"),
        **with_interval("growth_rate", ("N",),
                        "exponential rate of the seed-mean distance over its escape window "
                        "(NaN: no escape)"),
        "growth_rate_window": variable(("N", "edge"), point["growth_rate_window"],
                                       "first and last time of the escape window"),
        "growth_rate_seed": variable(("N", "seed"), per_seed[..., 0],
                                     "exponential rate of each seed's distance over its escape "
                                     "window (NaN: no escape)"),
        **with_interval("collapse_spread", (),
                        "largest relative spread over N of sqrt(N) times the seed-mean "
                        "distance before the first escape"),
        "collapse_spread_time": variable((), point["collapse_spread_time"],
                                         "time of the largest collapse spread"),
        "collapse_spread_curve": variable(
            ("time",), spread_curve(time, n, mean, point["first_escape"]),
            "relative spread over N of sqrt(N) times the seed-mean distance (NaN outside "
            "0 < t < first escape)"),
        **with_interval("escape_slope", (), "slope b of the escape time against ln N"),
        **with_interval("predicted_slope", (),
                        "1/(2 lambda_ref), lambda_ref the rate of the largest escaping N"),
        **with_interval("predicted_slope_median", (),
                        "1/(2 lambda_med), lambda_med the median rate over escaping N"),
        **with_interval("law_ratio", (), "b times 2 lambda_ref (1: the ln N law)"),
        **with_interval("law_ratio_median", (), "b times 2 lambda_med"),
    }
    coords = {
        "N": n.astype(np.int64),
        "seed": np.asarray(list(seeds) if seeds is not None else range(s_count), dtype=np.int64),
        "time": time,
        "bound": list(BOUNDS),
        "edge": list(EDGES),
    }
    attrs = {
        "delta": float(delta), "floor": float(floor), "escaped_n": point["escaped_n"],
        "reference_N": int(n[ref]) if ref is not None else 0,
        "bootstrap": int(bootstrap), "bootstrap_seed": int(seed),
        "confidence": float(confidence),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def risk_ratios(n, vanilla, held, held_names: Sequence[str], bootstrap: int, seed: int,
                confidence: float) -> xr.Dataset:
    """For each held scheme h, ``risk_ratio[h, N] = mean_s R_h(N, s) / mean_s R_vanilla(N, s)``
    (the seed-mean final population risks, ``vanilla`` (M, S) and ``held`` (H, M, S)), and
    ``risk_ratio_interval`` (held, N, bound): a percentile bootstrap over seeds, the same
    resampled seeds in numerator and denominator (a held run and the vanilla run of one seed
    share their start and stream), ``numpy.random.default_rng([seed, 1])``.  A ratio above 1
    with the held schemes on E^G says the point they reached is not a minimum over all laws.
    """
    vanilla = np.asarray(vanilla, dtype=np.float64)
    held = np.asarray(held, dtype=np.float64)
    n = np.asarray(n)
    if vanilla.ndim != 2 or held.shape[1:] != vanilla.shape or held.shape[0] != len(held_names):
        raise ValueError(f"need vanilla (N, seed) and held (H, N, seed) of one shape, got "
                         f"{vanilla.shape} and {held.shape} for {len(held_names)} held schemes")
    if vanilla.shape[0] != n.size:
        raise ValueError(f"vanilla has {vanilla.shape[0]} N, n has {n.size}")
    ratio = held.mean(axis=-1) / vanilla.mean(axis=-1)
    m_count, s_count = vanilla.shape
    rng = np.random.default_rng([int(seed), 1])
    rows = np.arange(m_count)[:, None]
    draws = []
    for _ in range(int(bootstrap)):
        pick = rng.integers(0, s_count, size=(m_count, s_count))
        draws.append(held[:, rows, pick].mean(axis=-1) / vanilla[rows, pick].mean(axis=-1))
    interval = (percentile_interval(np.asarray(draws), confidence) if bootstrap
                else np.full((*ratio.shape, 2), np.nan))
    return xr.Dataset(
        {
            "risk_ratio": variable(("held", "N"), ratio,
                                   "seed-mean final population risk of the held scheme over "
                                   "vanilla's"),
            "risk_ratio_interval": variable(
                ("held", "N", "bound"), interval,
                f"risk ratio: {confidence:g} bootstrap interval over seeds"),
        },
        coords={"held": list(held_names), "N": n.astype(np.int64), "bound": list(BOUNDS)},
    )
