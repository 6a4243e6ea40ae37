"""The rotation stage's jobs (PAPER.md §11): a compact group through the grid machinery.

The ``rotation`` section names a compact group (``group``: SO2 or O2 with its
``quadrature_points`` K and ``symmetrized_points`` K_sym), a unit, teachers (the WI one the
``data.teacher_orbit_points``-point orbit of the arbitrary cloud), schemes, initialisations,
N values and seeds, ``training`` overrides of the top-level ``training`` section, and an
optional ``baseline`` scheme (trained a second time per (teacher, seed) on a random stream
of its own: the same-scheme floor that claim 1's between-scheme distances are compared
with, as ``metrics.baseline`` does for the grid).
Its jobs reuse the grid's library functions: one training job per (init, N) with every
teacher × scheme × seed stacked (:func:`mfsym.pipeline.runs.train_block`), its metrics
(:func:`mfsym.measure.metrics.run_metrics`: RMD to the symmetrised cloud uses the
K_sym-point orbit and says so), ``rotation/summary.nc`` with the teachers' equivariance
errors, and the FA_K quadrature study (:mod:`mfsym.studies.quadrature`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..core.compact import ROTATION_GROUPS
from ..core.teachers import read_teachers
from ..engine import checkpoint as ckpt
from ..measure.equivariance import equivariance_error
from ..measure.metrics import run_metrics
from ..records import lineage
from ..records.results import read_dataset, variable, write_dataset
from ..studies.quadrature import fa_quadrature_study
from .config import ConfigError, build_group, build_teachers, build_unit, train_config
from .data import evaluation_dataset, initial_dataset, teacher_dataset
from .runs import train_block
from .summary import aggregate

#: The part of the configuration that determines every file of the stage.
SCOPE = lineage.ROTATION
SYMMETRIZED_NOTE = "ν^G estimated by the {k}-point orbit (K_sym = {k})"


def training_section(training: Mapping, section: Mapping) -> dict:
    """The top-level ``training`` with the stage's overrides (``rotation.training``)."""
    return {**training, **section.get("training", {})}


def check_section(section: Mapping, training: Mapping) -> None:
    """Build everything the stage needs before any job; raise :class:`ConfigError` naming
    the ``rotation.*`` key at fault."""
    group_cfg = section["group"]
    if group_cfg["name"] not in ROTATION_GROUPS:
        raise ConfigError(f"rotation.group.name = {group_cfg['name']!r} is not allowed; "
                          f"allowed values: {', '.join(ROTATION_GROUPS)}")
    try:
        group = build_group(group_cfg, section["unit"])
        build_teachers(group, section["teachers"], section["data"])
        train_config(training_section(training, section))
        train_config(training_section(training, section["quadrature"]))
    except ValueError as err:
        raise ConfigError(f"rotation: {err}") from None
    quad = section["quadrature"]
    if quad["reference_points"] <= max(quad["points"]):
        raise ConfigError(
            f"rotation.quadrature.reference_points = {quad['reference_points']!r} must "
            f"exceed the largest of rotation.quadrature.points ({max(quad['points'])})")
    if quad["teacher"] not in section["teachers"]:
        raise ConfigError(f"rotation.quadrature.teacher = {quad['teacher']!r} is not in "
                          f"rotation.teachers; allowed: {', '.join(section['teachers'])}")
    baseline = section.get("baseline")
    if baseline is not None and baseline not in section["schemes"]:
        raise ConfigError(f"rotation.baseline = {baseline!r} is not in rotation.schemes; "
                          f"allowed: null, {', '.join(section['schemes'])}")
    for i, pair in enumerate(section["pairs"]):
        bad = [s for s in pair.split("-") if s not in section["schemes"]]
        if bad:
            raise ConfigError(f"rotation.pairs[{i}] = {pair!r} names {bad}, not in "
                              f"rotation.schemes; allowed: {', '.join(section['schemes'])}")


def train_job(section: Mapping, training: Mapping, init: str, n_particles: int, output,
              config: Mapping, checkpoint_path=None, threads: int | None = None,
              title: str | None = None) -> None:
    """Train every teacher × scheme × seed of one (init, N) and write the run dataset
    (``title``: its title, by default the rotation stage's); the checkpoint (if any) is
    deleted after success and resumed from after a failure."""
    group_cfg, unit_cfg = section["group"], section["unit"]
    tcfg = training_section(training, section)
    inputs = {
        "teachers": teacher_dataset(group_cfg, unit_cfg, section["teachers"], section["data"]),
        "initial": initial_dataset(group_cfg, unit_cfg, tcfg, init, n_particles,
                                   section["seeds"]),
        "eval": evaluation_dataset(group_cfg, tcfg),
    }
    setting = {"group": group_cfg, "unit": unit_cfg, "training": tcfg,
               "schemes": section["schemes"], "baseline": section.get("baseline")}
    ds = train_block(setting, init, int(n_particles), inputs, checkpoint_path, threads)
    write_dataset(ds, output, config, title or
                  f"rotation setting ({group_cfg['name']}): runs, init={init}, N={n_particles}")
    if checkpoint_path is not None:
        ckpt.remove_checkpoint(checkpoint_path)


def metrics_job(section: Mapping, runs_path, output, config: Mapping, threads: int = 1) -> None:
    """The per-run metrics of one run file (RMD to ν^G by the K_sym-point orbit);
    ``threads``: threads solving its independent W₂ problems."""
    runs = read_dataset(runs_path, config, SCOPE)
    ds = run_metrics(runs, build_group(section["group"], section["unit"]), section["pairs"],
                     threads=threads)
    note = SYMMETRIZED_NOTE.format(k=section["group"]["symmetrized_points"])
    ds["rmd_symmetrized"].attrs["long_name"] += f" ({note})"
    write_dataset(ds, output, config, f"rotation setting: metrics, init={ds.attrs['init']}, "
                                      f"N={ds.attrs['N']}")


def teacher_errors(section: Mapping, training: Mapping) -> dict[str, float]:
    """Each teacher's relative equivariance error over Haar elements of the compact group
    (:func:`mfsym.measure.equivariance.equivariance_error`; ``equivariance_samples``
    inputs x ~ N(0, σ²I) of the evaluation seed, one Haar element each)."""
    group = build_group(section["group"], section["unit"])
    unit = build_unit(section["group"], section["unit"])
    teachers = read_teachers(teacher_dataset(section["group"], section["unit"],
                                             section["teachers"], section["data"]))
    tcfg = train_config(training_section(training, section))
    rng = np.random.default_rng([tcfg.eval_seed, 11])
    n = int(section["equivariance_samples"])
    x = tcfg.input_std * rng.standard_normal((n, group.dim_x))
    mats = group.haar.haar(n, rng)
    return {k: equivariance_error(unit, t.particles, x, mats, mats) for k, t in teachers.items()}


def summary_job(section: Mapping, training: Mapping, metric_paths: Sequence, output,
                config: Mapping) -> None:
    """Aggregate the stage's metrics into ``rotation/summary.nc`` (the grid's layout) plus
    ``teacher_equivariance_error`` (teacher) and the group's K and K_sym."""
    blocks = [read_dataset(p, config, SCOPE) for p in metric_paths]
    ds = aggregate(blocks, section["inits"], section["n_particles"], section["teachers"],
                   section["schemes"], section["seeds"], section["pairs"])
    ds["rmd_symmetrized"].attrs["long_name"] = blocks[0]["rmd_symmetrized"].attrs["long_name"]
    errors = teacher_errors(section, training)
    ds["teacher_equivariance_error"] = variable(
        ("teacher",), [errors[t] for t in ds["teacher"].values],
        "relative equivariance error of the teacher network over Haar elements")
    group = section["group"]
    ds.attrs.update(group=group["name"], quadrature_points=int(group["quadrature_points"]),
                    symmetrized_points=int(group["symmetrized_points"]),
                    teacher_orbit_points=int(section["data"]["teacher_orbit_points"]),
                    setting=f"{group['name']}-{section['unit']['name']}")
    write_dataset(ds, output, config, f"rotation setting ({group['name']}): summary")


def quadrature_job(section: Mapping, training: Mapping, output, config: Mapping,
                   threads: int | None = None) -> None:
    """Run the FA_K study of ``rotation.quadrature`` and write its dataset."""
    quad = section["quadrature"]
    group = build_group(section["group"], section["unit"])
    unit = build_unit(section["group"], section["unit"])
    teacher = build_teachers(group, [quad["teacher"]], section["data"])[quad["teacher"]]
    ds = fa_quadrature_study(
        group.compact, unit, teacher, quad["points"], quad["reference_points"], quad["N"],
        quad["seeds"], quad["inits"], train_config(training_section(training, quad)),
        quad["n_eval"], threads=threads,
    )
    write_dataset(ds, output, config, f"rotation setting ({group.compact.name}): FA_K study")
