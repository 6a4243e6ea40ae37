"""The precision swap of the claims table (PAPER.md §1): one cell of a stage rerun alone in
a given float type, with dense snapshots, for the rounding test of the "stays on E^G" rows
(:func:`mfsym.paper.claims.stats.rounding_test`).

A cell is one run (init, N, teacher, scheme, seed; a deep stage adds its depth and names the
size N or M).  Its random stream depends on (seed, N) only and its initial particles and
risk sample on the configuration alone (:mod:`mfsym.engine.training`), so the cell trains
alone exactly as it did in its stack.  Its samples and noise are drawn in float64 and
rounded to the float type of the rerun, so the float32 and float64 reruns differ by
arithmetic precision alone (a float64 rerun ends where a float64 run of the stage ended; a
float32 rerun does not repeat a float32 run of the stage, which drew its numbers in
float32).  The snapshots are ``n_snapshots`` uniform times from 0 to T, so the growth of a
departure is resolved whatever the stage recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from ..core.teachers import Teacher
from ..engine.models import ResNet, repeat_layers
from ..engine.training import RunSpec, TrainConfig, train_stack
from .config import build_group, build_teachers, build_unit, train_config
from .deep import deep_problem, deep_training
from .rotation import training_section

LOG = logging.getLogger(__name__)

#: Stages a cell can come from.
STAGES = ("grid", "rotation", "mlp", "resnet")
#: Snapshots of a rerun (uniform in time, 0 and T included): fine enough to resolve a
#: departure that grows by e^7 per unit time (the mlp unit at its largest step).
SNAPSHOTS = 401


def _dense(cfg: TrainConfig, dtype: str, n_snapshots: int) -> TrainConfig:
    return TrainConfig.from_dict({
        **cfg.to_dict(), "dtype": dtype, "n_snapshots": int(n_snapshots),
        "snapshot_spacing": "linear", "checkpoint_every": 0, "keep_particle_snapshots": False,
    })


def _shallow(config: Mapping, stage: str):
    """Group, unit, teachers and training of the grid or the rotation stage."""
    if stage == "grid":
        section, training = config, config["training"]
    else:
        section = config["rotation"]
        training = training_section(config["training"], section)
    group = build_group(section["group"], section["unit"])
    unit = build_unit(section["group"], section["unit"])
    teachers = build_teachers(group, list(section["teachers"]), section["data"])
    return group, unit, teachers, train_config(training), "N"


def _deep(config: Mapping, stage: str, depth: int):
    problem = deep_problem(config["deep"], stage)
    model = problem.unit if stage == "mlp" else ResNet(problem.unit, depth)
    teachers = {k: Teacher(k, repeat_layers(t.particles, depth))
                for k, t in problem.teachers.items()}
    size = "N" if stage == "mlp" else "M"
    return (problem.group, model, teachers, deep_training(config["training"], config["deep"],
                                                          stage), size)


def rerun_cell(config: Mapping, stage: str, cell: Mapping, dtype: str,
               n_snapshots: int = SNAPSHOTS, threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Train ``cell`` of ``stage`` alone in ``dtype`` and return ``(time, rmd)``: the
    snapshot times ``(n_snapshots,)`` and RMD(ν_t, P_E#ν_t) there."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} for a precision swap; allowed: "
                         f"{list(STAGES)}")
    depth = int(cell.get("depth", 1))
    if stage in ("grid", "rotation"):
        group, model, teachers, cfg, size = _shallow(config, stage)
    else:
        group, model, teachers, cfg, size = _deep(config, stage, depth)
    teacher, scheme = str(cell["teacher"]), str(cell["scheme"])
    run = RunSpec(teacher, scheme, int(cell["seed"]))
    n_particles = depth * int(cell[size])
    res = train_stack(group, model, {teacher: teachers[teacher]}, [run], n_particles,
                      str(cell["init"]), _dense(cfg, dtype, n_snapshots), threads=threads,
                      label=f"precision swap {stage} {dict(cell)} {dtype}",
                      draw_dtype="float64")
    LOG.info("precision swap: %s cell %s rerun in %s: RMD to E^G %.3g at T (largest %.3g)",
             stage, dict(cell), dtype, res.rmd_projected[0, -1], res.rmd_projected[0].max())
    return res.times, res.rmd_projected[0]


def make_rerun(config: Mapping, n_snapshots: int = SNAPSHOTS, threads: int | None = None):
    """The claims table's rerun callable (:data:`mfsym.paper.claims.registry.Rerun`) for
    the stages of ``config``."""

    def rerun(stage: str, cell: Mapping, dtype: str):
        return rerun_cell(config, stage, cell, dtype, n_snapshots, threads)

    return rerun
