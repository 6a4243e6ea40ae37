"""What every row of the claims table is made of: the verdict kinds, the row itself, the
thresholds that decide it, and the small helpers the claim families share.

Verdict kinds (PAPER.md §1, "How a claim is decided"):

* :data:`SUPPORTED` — the criterion holds;
* :data:`ROUNDING` — a "stays on E^G" row whose departure was shown to be rounding
  amplified by a transversally unstable E^G (:func:`mfsym.paper.claims.stats.rounding_test`);
* :data:`NOT_SUPPORTED` — the criterion fails at this configuration;
* :data:`NOT_MEASURED` — the results hold no data for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import xarray as xr

from ..tex import escape_tex

SI, WI = "SI", "WI"
INITS = ("SI", "WI")
TEACHERS = ("arbitrary", "WI", "SI")
SCHEMES = ("vanilla", "DA", "FA", "EA")
PAIRS = ("vanilla-DA", "vanilla-FA", "DA-FA", "vanilla-EA", "DA-EA", "FA-EA")
SYMMETRIC_TEACHERS = ("WI", "SI")
ARBITRARY = "arbitrary"
FREE_SCHEMES = ("vanilla", "DA", "FA")
FREE_PAIRS = ("vanilla-DA", "vanilla-FA", "DA-FA")
DA_ORBIT = "DA-orbit"

SUPPORTED = "supported"
ROUNDING = "supported (rounding amplified)"
NOT_SUPPORTED = "not supported at this configuration"
NOT_MEASURED = "not measured"
#: The verdict kinds in the order the manuscript counts them.
VERDICTS = (SUPPORTED, ROUNDING, NOT_SUPPORTED, NOT_MEASURED)


class PaperInputError(ValueError):
    """A result file needed by the manuscript is missing or violates its schema."""


@dataclass(frozen=True)
class Criteria:
    """Thresholds of the verdicts (``paper.criteria``; PAPER.md §1).

    decay_slope_max: largest log-log slope in N of a distance that shrinks with N;
    wi_slope_max: the same for the distance to WI laws; exact_tol: largest RMD to E^G of a
    cloud that stays on E^G; escape_min: the level δ a distance to E^G reaches when it
    escapes (and the smallest one of a cloud that left E^G); angle_max_deg: the heuristic's
    largest principal angle; floor_ratio_max: claim 1's largest ratio to the same-scheme
    floor at the largest N; rounding_rate_tol: largest relative difference of the two
    precisions' growth rates in the rounding test; rounding_ratio_tol: largest factor
    between the ratio of the two departures and the ratio of the machine epsilons;
    law_ratio_max: the escape law holds when b·2λ lies in [1/law_ratio_max, law_ratio_max].
    """

    decay_slope_max: float = -0.25
    wi_slope_max: float = -0.125
    exact_tol: float = 1e-4
    escape_min: float = 0.05
    angle_max_deg: float = 5.0
    floor_ratio_max: float = 1.0
    rounding_rate_tol: float = 0.2
    rounding_ratio_tol: float = 10.0
    law_ratio_max: float = 2.0

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"paper.criteria.{f.name} = {v!r} is invalid; must be a number")
        for key in ("exact_tol", "escape_min", "angle_max_deg", "floor_ratio_max",
                    "rounding_rate_tol"):
            if getattr(self, key) <= 0:
                raise ValueError(f"paper.criteria.{key} = {getattr(self, key)!r}; must be > 0")
        for key in ("rounding_ratio_tol", "law_ratio_max"):
            if getattr(self, key) < 1:
                raise ValueError(f"paper.criteria.{key} = {getattr(self, key)!r}; must be ≥ 1")

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
    statement, criterion: TeX text; values: (TeX label, number) pairs shown as evidence —
    the numbers the verdict was decided from, and the per-N figures of the criteria used
    before the revision; verdict: one of :data:`VERDICTS`.
    """

    claim: int
    key: str
    statement: str
    values: tuple[tuple[str, float], ...]
    criterion: str
    verdict: str


def seed_mean(da: xr.DataArray) -> xr.DataArray:
    """m(·): the mean over seeds."""
    return da.mean("seed")


def verdict(ok: bool | None) -> str:
    """SUPPORTED, NOT_SUPPORTED, or NOT_MEASURED for None."""
    if ok is None:
        return NOT_MEASURED
    return SUPPORTED if ok else NOT_SUPPORTED


def present(ds: xr.Dataset, dim: str, labels: Sequence[str]) -> list[str]:
    """The ``labels`` of ``dim`` that ``ds`` has, in the order given."""
    have = set(ds[dim].values.tolist())
    return [lab for lab in labels if lab in have]


def not_measured(claim: int, key: str, statement: str, criterion: str, why: str) -> Claim:
    """A row without data: the reason is its only value."""
    return Claim(claim, key, statement, ((escape_tex(why), math.nan),), criterion, NOT_MEASURED)
