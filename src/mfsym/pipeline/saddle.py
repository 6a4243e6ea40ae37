"""The saddle study's jobs (PAPER.md §12): the escape of vanilla's cloud from E^G against N.

The ``saddle`` section names one setting — ``group``, ``unit``, ``data``, one ``teacher``
(WI by default) and the SI start (``init``) — the ``schemes`` (vanilla and schemes held on
E^G: FA, EA, DA-orbit), the N values and seeds, the escape level ``delta``, ``training``
overrides of the top-level ``training`` (long enough that the largest N escapes, dense
snapshots uniform in t) and the ``analysis`` keys (``floor``, ``bootstrap``,
``bootstrap_seed``, ``confidence``).

Jobs: one training job per N (every scheme × seed stacked, through the rotation stage's
:func:`mfsym.pipeline.rotation.train_job` and so :func:`mfsym.pipeline.runs.train_block`,
recording ``rmd_projected`` and ``population_risk`` at the snapshot times), then one
analysis job that reads the run files and writes ``saddle.nc``
(:func:`saddle_dataset`, the statistics of :mod:`mfsym.studies.saddle`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from ..records import lineage
from ..records.results import read_dataset, variable, write_dataset
from ..studies.saddle import NONFINITE, escape_analysis, risk_ratios
from .config import ConfigError, build_group, build_teachers, train_config
from .rotation import train_job as rotation_train_job
from .rotation import training_section

LOG = logging.getLogger(__name__)
#: The part of the configuration that determines saddle.nc, and a run file of one N.
SCOPE = lineage.SADDLE
RUNS_SCOPE = lineage.SADDLE_RUNS
#: Schemes that keep an SI start on E^G (their final risk over vanilla's says "saddle").
HELD_SCHEMES = ("FA", "DA-orbit", "EA")
#: Prefixes of the library's messages that already name a key of the section.
_SECTION_KEYS = ("group", "unit", "data", "training")
#: Variables of saddle.nc that may hold NaN (no escape; see mfsym.studies.saddle).
SADDLE_NONFINITE = NONFINITE


def held_schemes(schemes: Sequence[str]) -> list[str]:
    """The schemes of ``schemes`` held on E^G, in the section's order."""
    return [s for s in schemes if s in HELD_SCHEMES]


def _named(err: Exception) -> str:
    text = str(err)
    return f"saddle.{text}" if text.startswith(_SECTION_KEYS) else f"saddle: {text}"


def check_section(section: Mapping, training: Mapping) -> None:
    """Build everything the study needs before any job; raise :class:`ConfigError` naming
    the ``saddle.*`` key at fault, its value and what is allowed."""
    try:
        group = build_group(section["group"], section["unit"])
        build_teachers(group, [section["teacher"]], section["data"])
        tcfg = train_config(training_section(training, section))
    except ValueError as err:
        raise ConfigError(_named(err)) from None
    schemes = list(section["schemes"])
    if "vanilla" not in schemes:
        raise ConfigError(f"saddle.schemes = {schemes!r} lacks vanilla, the scheme whose "
                          "escape from E^G the study measures; it must hold vanilla")
    if not held_schemes(schemes):
        raise ConfigError(f"saddle.schemes = {schemes!r} holds no scheme held on E^G; it "
                          f"needs one of {', '.join(HELD_SCHEMES)} for the risk ratio")
    if tcfg.snapshot_spacing != "linear":
        raise ConfigError(
            f"saddle.training.snapshot_spacing = {tcfg.snapshot_spacing!r} is not allowed; "
            "the escape time and rate need snapshots uniform in t: linear")
    delta = float(section["delta"])
    if not 0 < delta <= 1:
        raise ConfigError(f"saddle.delta = {section['delta']!r} is not allowed; the escape "
                          "level of an RMD must lie in (0, 1]")
    analysis = section["analysis"]
    if not 0 < float(analysis["floor"]) < delta:
        raise ConfigError(f"saddle.analysis.floor = {analysis['floor']!r} is not allowed; the "
                          f"lower edge of the rate's window must lie in (0, saddle.delta = "
                          f"{delta!r})")
    if not 0 < float(analysis["confidence"]) < 1:
        raise ConfigError(f"saddle.analysis.confidence = {analysis['confidence']!r} is not "
                          "allowed; it must lie in (0, 1)")
    if len(section["seeds"]) < 2:
        raise ConfigError(f"saddle.seeds = {list(section['seeds'])!r} is not allowed; the "
                          "bootstrap over seeds needs at least 2")
    for i, n in enumerate(section["n_particles"]):
        try:
            tcfg.total_steps(int(n))
        except ValueError as err:
            raise ConfigError(f"saddle.n_particles[{i}] = {n!r}: {err}") from None


def runs_section(section: Mapping) -> dict:
    """The section as the rotation stage's training job reads one: its one teacher, no
    baseline twin."""
    return {"group": section["group"], "unit": section["unit"], "data": section["data"],
            "teachers": [section["teacher"]], "schemes": list(section["schemes"]),
            "seeds": list(section["seeds"]), "training": section.get("training", {}),
            "baseline": None}


def setting_label(section: Mapping) -> str:
    """E.g. ``SO2-uv, WI teacher, SI start``."""
    return (f"{section['group']['name']}-{section['unit']['name']}, "
            f"{section['teacher']} teacher, {section['init']} start")


def train_job(section: Mapping, training: Mapping, n_particles: int, output, config: Mapping,
              checkpoint_path=None, threads: int | None = None) -> None:
    """Train every scheme × seed of one N of the study and write its run file."""
    rotation_train_job(
        runs_section(section), training, section["init"], int(n_particles), output, config,
        checkpoint_path=checkpoint_path, threads=threads,
        title=f"saddle study ({setting_label(section)}): runs, N={int(n_particles)}",
    )


def _stacked(runs: Sequence[xr.Dataset], name: str, teacher: str) -> np.ndarray:
    """``name`` of every run file as (scheme, N, seed, time)."""
    return np.stack([r[name].sel(teacher=teacher).transpose("scheme", "seed", "time").values
                     for r in runs], axis=1)


def _check_runs(runs: Sequence[xr.Dataset], paths: Sequence, section: Mapping) -> None:
    first = runs[0]
    for r, path in zip(runs, paths, strict=True):
        for coord in ("scheme", "seed", "time"):
            if not np.array_equal(r[coord].values, first[coord].values):
                raise ValueError(f"{path}: its {coord} coordinate differs from that of "
                                 f"{paths[0]}; every run file of the study must share it")
        if section["teacher"] not in r["teacher"].values:
            raise ValueError(f"{path} holds no run of the teacher {section['teacher']!r}")
        if r.attrs.get("init") != section["init"]:
            raise ValueError(f"{path} starts from {r.attrs.get('init')!r}, the study from "
                             f"{section['init']!r}")
        if r.attrs.get("dtype") != first.attrs.get("dtype"):
            raise ValueError(f"{path} trained in {r.attrs.get('dtype')}, {paths[0]} in "
                             f"{first.attrs.get('dtype')}")
        for name in ("rmd_projected", "population_risk"):
            if not np.all(np.isfinite(r[name].values)):
                raise ValueError(f"{path}: {name} holds non-finite values")


def saddle_dataset(section: Mapping, runs: Sequence[xr.Dataset], paths: Sequence = ()
                   ) -> xr.Dataset:
    """The study's dataset from the run files of every N (any order).

    Coordinates ``scheme``, ``N`` (ascending), ``seed``, ``time``, ``held`` (the held
    schemes present), ``bound`` (low, high), ``edge`` (start, end).  Curves
    ``rmd_projected_curve`` and ``population_risk_curve`` (scheme, N, seed, time); the
    escape statistics of vanilla's ``rmd_projected`` (:func:`mfsym.studies.saddle.
    escape_analysis`, with delta and the ``analysis`` keys); ``risk_ratio`` (held, N) and
    ``risk_ratio_interval`` (held, N, bound) of the final population risks
    (:func:`mfsym.studies.saddle.risk_ratios`); ``held_distance_max`` (held): the largest
    RMD to E^G of each held scheme over N, seeds and times (rounding: they stay on E^G).
    Attributes: those of the analysis plus ``setting``, ``dtype``, ``T``, ``n_snapshots``.
    """
    paths = list(paths) or [f"run file {i}" for i in range(len(runs))]
    order = np.argsort([int(r.attrs["N"]) for r in runs])
    runs, paths = [runs[i] for i in order], [paths[i] for i in order]
    _check_runs(runs, paths, section)
    n = np.array([int(r.attrs["N"]) for r in runs])
    if np.unique(n).size != n.size:
        raise ValueError(f"two run files have the same N: {n.tolist()}")
    first = runs[0]
    schemes = [str(s) for s in first["scheme"].values]
    if "vanilla" not in schemes:
        raise ValueError(f"the run files hold no vanilla runs (schemes {schemes})")
    held = held_schemes(schemes)
    teacher = section["teacher"]
    rmd = _stacked(runs, "rmd_projected", teacher)
    risk = _stacked(runs, "population_risk", teacher)
    time = first["time"].values
    seeds = first["seed"].values
    analysis = section["analysis"]
    vanilla = schemes.index("vanilla")
    stats = escape_analysis(time, n, rmd[vanilla], float(section["delta"]),
                            float(analysis["floor"]), int(analysis["bootstrap"]),
                            int(analysis["bootstrap_seed"]), float(analysis["confidence"]),
                            seeds=seeds)
    held_idx = [schemes.index(h) for h in held]
    ratios = risk_ratios(n, risk[vanilla, :, :, -1], risk[held_idx, :, :, -1], held,
                         int(analysis["bootstrap"]), int(analysis["bootstrap_seed"]),
                         float(analysis["confidence"]))
    curve_dims = ("scheme", "N", "seed", "time")
    data = {
        "rmd_projected_curve": variable(
            curve_dims, rmd, "RMD between the particles and their projection on E^G"),
        "population_risk_curve": variable(
            curve_dims, risk, "population risk on the fixed evaluation sample"),
        "held_distance_max": variable(
            ("held",), rmd[held_idx].reshape(len(held), -1).max(axis=1),
            "largest RMD to E^G of the held scheme over N, seeds and times"),
    }
    ds = xr.Dataset(data, coords={"scheme": schemes, "N": n, "seed": seeds,
                                  "time": first["time"].variable, "held": held})
    ds = xr.merge([ds, stats, ratios], combine_attrs="override")
    ds.attrs = {
        **stats.attrs,
        "setting": setting_label(section),
        "teacher": teacher, "init": section["init"],
        "dtype": str(first.attrs["dtype"]),
        "precision_note": (
            "float64 by default: the held schemes stay on E^G to float64 rounding; in "
            "float32 the rounding of the rotation matrices drives FA_K, when trained, off "
            "E^G from an SI start (the rotation stage's measurement)"),
        "T": float(time[-1]), "n_snapshots": int(time.size),
        "escape_level_note": "escape time: first snapshot time with the seed-mean RMD to E^G "
                             ">= delta; NaN: no escape within T",
    }
    return ds


def analysis_job(section: Mapping, run_paths: Sequence, output, config: Mapping) -> None:
    """Read the run files (verified: checksum, and the configuration that determines them),
    build :func:`saddle_dataset` and write ``saddle.nc`` (NaN only in the documented
    no-escape variables)."""
    runs = [read_dataset(p, config, RUNS_SCOPE) for p in run_paths]
    expected = sorted(int(n) for n in section["n_particles"])
    found = sorted(int(r.attrs["N"]) for r in runs)
    if found != expected:
        raise ValueError(f"the run files are for N = {found}, saddle.n_particles asks for "
                         f"{expected}")
    ds = saddle_dataset(section, runs, [str(p) for p in run_paths])
    LOG.info("saddle study: %s", summary_line(ds))
    write_dataset(ds, output, config, f"saddle study ({ds.attrs['setting']})",
                  allow_nonfinite=SADDLE_NONFINITE)


def summary_line(ds: xr.Dataset) -> str:
    """One line of the study's headline numbers (for logs)."""
    def num(name):
        value = float(ds[name])
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return (f"escaped {ds.attrs['escaped_n']}/{ds.sizes['N']} N; b = {num('escape_slope')}, "
            f"1/(2 lambda_ref) = {num('predicted_slope')}, b*2*lambda_ref = "
            f"{num('law_ratio')}, collapse spread = {num('collapse_spread')}")
