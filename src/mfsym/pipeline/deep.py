"""The deep stages' jobs (PAPER.md §10): the ``deep`` config section in, a dataset out.

Stage ``mlp`` (rule ``deep_units``) and stage ``resnet`` (rule ``resnet``; the names are
``mfsym.pipeline.targets.DEEP_RULES``) each write one
dataset (``deep/<stage>.nc``, :mod:`mfsym.studies.deep`).  Their training is the
``training`` section overridden by ``deep.training`` and then by ``deep.<stage>.training``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..engine.checkpoint import remove_checkpoint
from ..records.results import write_dataset
from ..studies.deep import (
    STAGES,
    DeepError,
    DeepFloor,
    DeepGrid,
    DeepProblem,
    nonfinite_variables,
    run_stage,
)
from .config import ConfigError, build_group, build_teachers, build_unit, train_config


def _stage_section(deep: Mapping, stage: str) -> Mapping:
    if stage not in STAGES:
        raise DeepError(f"unknown deep stage {stage!r}; allowed: {list(STAGES)}")
    return deep[stage]


def deep_grid(deep: Mapping, stage: str) -> DeepGrid:
    """The :class:`DeepGrid` of ``stage`` from the ``deep`` section."""
    sec = _stage_section(deep, stage)
    sizes = sec["n_particles"] if stage == "mlp" else sec["particles_per_layer"]
    depths = (1,) if stage == "mlp" else sec["depths"]
    return DeepGrid(stage, tuple(sizes), tuple(depths), tuple(deep["inits"]),
                    tuple(deep["teachers"]), tuple(deep["schemes"]), tuple(deep["seeds"]),
                    tuple(deep["pairs"]), deep_floor(deep.get("baseline")))


def deep_floor(baseline: Mapping | None) -> DeepFloor | None:
    """The floor of ``deep.baseline`` (None for ``scheme: none`` or no section)."""
    if not baseline or baseline.get("scheme", "none") == "none":
        return None
    return DeepFloor(baseline["scheme"], tuple(baseline.get("inits", ())),
                     tuple(baseline.get("teachers", ())))


def deep_training(training: Mapping, deep: Mapping, stage: str):
    """``training`` ← ``deep.training`` ← ``deep.<stage>.training`` as a TrainConfig."""
    merged = {**training, **deep.get("training", {}),
              **_stage_section(deep, stage).get("training", {})}
    try:
        return train_config(merged)
    except ConfigError as err:
        raise DeepError(f"deep.{stage} training: {err}") from None


def deep_problem(deep: Mapping, stage: str) -> DeepProblem:
    """Group, unit and base teachers of ``stage`` (errors name ``deep.<stage>``)."""
    sec = _stage_section(deep, stage)
    try:
        unit = build_unit(sec["group"], sec["unit"])
        group = build_group(sec["group"], sec["unit"])
        teachers = build_teachers(group, list(deep["teachers"]), sec["data"])
    except ValueError as err:
        raise DeepError(f"deep.{stage}: {err}") from None
    if stage == "mlp" and unit.name != "mlp":
        raise DeepError(f"deep.mlp.unit.name = {unit.name!r}; the mlp stage trains 'mlp'")
    return DeepProblem(group, unit, teachers)


def check_section(deep: Mapping, training: Mapping) -> None:
    """Build every stage's grid, problem and training before any job runs."""
    for stage in STAGES:
        deep_grid(deep, stage)
        deep_problem(deep, stage)
        deep_training(training, deep, stage)


def deep_job(stage: str, deep: Mapping, training: Mapping, output, config: Mapping,
             checkpoint_dir=None, threads: int | None = None) -> None:
    """Train stage ``stage`` and write its dataset to ``output``; each stack checkpoints
    under ``checkpoint_dir`` (when ``training.checkpoint_every`` > 0) and its checkpoint
    is removed once the dataset is written."""
    grid = deep_grid(deep, stage)
    ckpts = []

    def checkpoint(init, depth, size, part=""):
        if checkpoint_dir is None:
            return None
        tail = f"_{part}" if part else ""
        ckpts.append(Path(checkpoint_dir) / f"{stage}_{init}_L{depth}_{size}{tail}.npz")
        return ckpts[-1]

    ds = run_stage(deep_problem(deep, stage), grid, deep_training(training, deep, stage),
                   threads, checkpoint)
    write_dataset(ds, output, config, f"Deep setting {stage} (PAPER.md §10): RMDs per "
                  "layer and pooled", allow_nonfinite=nonfinite_variables(ds))
    for path in ckpts:
        remove_checkpoint(path)

