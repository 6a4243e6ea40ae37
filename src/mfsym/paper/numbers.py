"""The manuscript's measured numbers: TeX macros from the result datasets, and the entry
point that writes them with the claims table (:mod:`mfsym.paper.claims` decides the rows).

Inputs are ``results/summary.nc`` (dims ``init, N, teacher, scheme, seed`` and ``pair``),
``results/heuristic.nc``, the Noether studies, the deep stages, the rotation summary and the
saddle study.  Every statistic is a mean over seeds; ``N_max`` is the largest N of the grid.
Every label of the results contract gets its macros, ``n/a`` where the grid lacks it, so the
manuscript compiles on any grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from itertools import product
from pathlib import Path

import numpy as np
import xarray as xr

from ..core.schemes import SCHEME_VARIANTS
from ..core.schemes import TRAINING_MODES as NOETHER_MODES
from ..core.units import ACTIVATIONS
from ..measure.escape import loglog_slope
from ..records import lineage
from ..records.atomic import write_text
from ..records.results import read_dataset
from ..studies.precision import fa_rounding_drift
from ..studies.saddle import escape_analysis
from .claims import (
    Claim,
    Context,
    Criteria,
    PaperInputError,
    all_claims,
    check_summary,
    claim_macros,
    claims_json,
    claims_markdown,
    heuristic_outcome,
    law_numbers,
    render_claims_table,
)
from .claims.base import (
    INITS,
    PAIRS,
    SCHEMES,
    SI,
    SYMMETRIC_TEACHERS,
    TEACHERS,
    present,
    seed_mean,
)
from .claims.registry import Rerun
from .seed_numbers import seed_macros
from .tex import escape_tex, format_exact, format_list, format_number, macro_name, render_macros

NOETHER_SCHEMES = tuple(SCHEME_VARIANTS)
#: Lower edge of the escape-rate window on the grid's curves when no saddle study sets one.
GRID_ESCAPE_FLOOR = 1e-3


# ---------------------------------------------------------------------------------------
# macros
# ---------------------------------------------------------------------------------------
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


#: The saddle study's numbers (:func:`mfsym.paper.claims.law_numbers`) as macros.
SADDLE_NUMBERS = (
    "escaped_n", "reference_N", "rate",
    *(f"{name}{end}" for name in ("escape_slope", "predicted_slope", "law_ratio",
                                  "law_ratio_median", "collapse_spread")
      for end in ("", "_low", "_high")),
    "risk_ratio_min",
)


def saddle_macros(ds: xr.Dataset | None, digits: int) -> dict[str, str]:
    """The saddle study's numbers, e.g. ``mfSaddleLawRatio``, ``mfSaddleLawRatioLow``, and
    its N list, seeds, δ, T and snapshot count; ``n/a`` without the study."""
    law = law_numbers(ds) if ds is not None else dict.fromkeys(SADDLE_NUMBERS, math.nan)
    out = {macro_name("Saddle", *key.split("_")): format_number(law[key], digits)
           for key in SADDLE_NUMBERS}
    if ds is None:
        na = format_number(math.nan, digits)
        return {**out, **dict.fromkeys(("mfSaddleNList", "mfSaddleNumSeeds", "mfSaddleDelta",
                                        "mfSaddleT", "mfSaddleSnapshots"), na)}
    out["mfSaddleNList"] = format_list([int(n) for n in ds.N.values], digits)
    out["mfSaddleNumSeeds"] = format_number(int(ds.sizes["seed"]), digits)
    out["mfSaddleDelta"] = format_exact(float(ds.attrs["delta"]))
    out["mfSaddleT"] = format_number(float(ds.time.values[-1]), digits)
    out["mfSaddleSnapshots"] = format_number(int(ds.sizes["time"]), digits)
    return out


def grid_escape_macros(ds: xr.Dataset, crit: Criteria, floor: float, digits: int
                       ) -> dict[str, str]:
    """``mfGridEscape``: a sentence on the saddle analysis (:func:`mfsym.studies.saddle.
    escape_analysis`, no bootstrap) of the grid's SI-start vanilla curves with the
    symmetric teacher furthest from E^G at N_max; ``mfGridEscapedN``: how many N reach
    ``escape_min`` within T (``n/a`` without curves)."""
    teachers = present(ds, "teacher", SYMMETRIC_TEACHERS)
    if ("rmd_projected_curve" not in ds or SI not in ds.init.values or not teachers
            or "vanilla" not in ds.scheme.values):
        return {"mfGridEscapedN": format_number(math.nan, digits),
                "mfGridEscape": escape_tex("the grid has no SI-start vanilla curves.")}
    final = seed_mean(ds.rmd_projected.sel(init=SI, teacher=teachers, scheme="vanilla"))
    teacher = str(final.isel(N=-1).idxmax("teacher").item())
    curves = ds.rmd_projected_curve.sel(init=SI, teacher=teacher, scheme="vanilla")
    curves = curves.transpose("N", "seed", "time")
    law = escape_analysis(curves.time.values, curves.N.values, curves.values,
                          crit.escape_min, floor, 0, 0, 0.9)
    escaped = int(law.attrs["escaped_n"])
    m = curves.mean("seed")
    delta = r"$\delta =$ " + format_exact(crit.escape_min)
    if escaped == 0:
        text = (rf"with the {escape_tex(teacher)} teacher no width reaches {delta} within "
                r"$T$ (largest seed-mean distance " + format_number(float(m.max()), digits)
                + r"): no saddle, the distance shrinks with $N$ at every time.")
    else:
        t_esc = law["escape_time"].dropna("N")
        text = (rf"with the {escape_tex(teacher)} teacher $N =$ "
                + format_list([int(n) for n in t_esc.N.values], digits) + rf" reach {delta} "
                r"(at $t =$ " + format_list([float(t) for t in t_esc.values], digits)
                + rf"), {curves.sizes['N'] - escaped} of {curves.sizes['N']} widths never")
        if "EA" in ds.scheme.values:
            risk = seed_mean(ds.population_risk.sel(init=SI, teacher=teacher)).isel(N=-1)
            text += (r"; EA's final risk over vanilla's at $N_{\max}$ is "
                     + format_number(float(risk.sel(scheme="EA") / risk.sel(scheme="vanilla")),
                                     digits) + " (a saddle needs it above 1)")
        text += r"; $b\cdot 2\lambda =$ " + format_number(float(law["law_ratio"]), digits) + "."
    return {"mfGridEscapedN": format_number(escaped, digits), "mfGridEscape": text}


def _check_unique(*parts: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for part in parts:
        clash = sorted(set(merged) & set(part))
        if clash:
            raise ValueError(f"macro name(s) defined twice: {clash}")
        merged.update(part)
    return merged


# ---------------------------------------------------------------------------------------
# the heuristic (claim 4)
# ---------------------------------------------------------------------------------------
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


def _summary(path, what: str, config, scope) -> xr.Dataset:
    ds = _read(path, what, config, scope)
    check_summary(ds)
    return ds.sortby("N")  # N_max is the last entry


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
    saddle_path=None,
    rerun: Rerun | None = None,
    markdown_path=None,
    seed_paths: Mapping[str, object] | None = None,
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
    deep_paths: ``{stage: deep/<stage>.nc}`` of the deep settings; rotation_path: the
    rotation stage's ``rotation/summary.nc``; saddle_path: ``saddle.nc`` of the saddle
    study (each None: no such rows).  seed_paths: ``{study: noether/<study>.nc}`` of the
    Noether seed's studies balance, momentum and tangent (:mod:`mfsym.paper.seed_numbers`;
    None: no such macros).  rerun: reruns one cell in a given float type for the
    rounding test of the "stays on E^G" rows (None: those rows that need it are "not
    supported", with the swap "not run").  markdown_path: where the table also goes as
    Markdown (None: not written).
    """
    crit = Criteria.from_dict(criteria or {})
    summary = _summary(summary_path, "summary of the grid", config, lineage.SUMMARY)
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
    seed = {k: _read(p, f"Noether {k} study", config, lineage.NOETHER)
            for k, p in (seed_paths or {}).items()}
    deep = {stage: _read(path, f"deep stage {stage}", config, lineage.deep_stage(stage))
            for stage, path in (deep_paths or {}).items()}
    rotation = (None if rotation_path is None
                else _summary(rotation_path, "rotation summary", config, lineage.ROTATION))
    saddle = (None if saddle_path is None
              else _read(saddle_path, "saddle study", config, lineage.SADDLE))
    ctx = Context(invariance=noether.get("invariance"), rerun=rerun)
    claims = all_claims(summary, crit, heuristic=heuristic, deep=deep, rotation=rotation,
                        saddle=saddle, ctx=ctx)
    precision = {}
    if precision_n is not None:
        drift = fa_rounding_drift((sections or {}).get("training", {}), int(precision_n))
        precision = precision_macros(drift, int(precision_n), digits)
    macros = _check_unique(
        grid_macros(summary, digits),
        *(config_macros(name, values) for name, values in (sections or {}).items()),
        config_macros("Crit", asdict(crit)),
        metric_macros(summary, digits),
        heuristic_macros(heuristic, digits) if heuristic is not None else {},
        noether_macros(noether["drift"], noether["invariance"], digits) if noether else {},
        seed_macros(seed, digits),
        precision,
        rotation_macros(rotation, digits) if rotation is not None else {},
        saddle_macros(saddle, digits),
        grid_escape_macros(summary, crit, float(saddle.attrs["floor"]) if saddle is not None
                           else GRID_ESCAPE_FLOOR, digits),
        claim_macros(claims, digits),
    )
    header = f"Measured numbers generated from {Path(summary_path).name}; do not edit."
    write_text(macros_path, render_macros(macros, header))
    write_text(table_path, render_claims_table(claims, digits))
    write_text(json_path, claims_json(claims))
    if markdown_path is not None:
        write_text(markdown_path, claims_markdown(claims, digits))
    return claims
