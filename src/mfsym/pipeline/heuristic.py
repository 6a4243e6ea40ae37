"""The heuristic stage's jobs: config sections in, step / setting / heuristic files out.

The discovery loop itself (PAPER.md §7) is :mod:`mfsym.studies.heuristic`; this module
only builds its inputs from the ``heuristic`` section (through the config builders) and
reads and writes the stage's files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..records import lineage
from ..records.results import check_recorded_config, read_dataset, write_dataset
from ..studies.heuristic import (
    STATUS,
    SYMMETRIC_TEACHERS,
    HeuristicError,
    Problem,
    combine_settings,
    heuristic_config,
    orthonormal_basis,
    run_step,
    setting_dataset,
    step_dataset,
    training_config,
)
from .config import build_group, build_teachers, build_unit


def build_problem(setting: Mapping) -> Problem:
    """A :class:`Problem` from a config entry of ``heuristic.settings``."""
    name = setting["name"]
    kind = setting["teacher"]
    if kind not in SYMMETRIC_TEACHERS:
        raise HeuristicError(
            f"heuristic setting {name!r}: teacher = {kind!r} is not allowed; the heuristic "
            f"needs symmetric data, allowed: {list(SYMMETRIC_TEACHERS)}"
        )
    group = build_group(setting["group"], setting["unit"])
    unit = build_unit(setting["group"], setting["unit"])
    teacher = build_teachers(group, [kind], setting["data"])[kind]
    return Problem(name, group, unit, teacher)


def check_section(section: Mapping, training: Mapping) -> None:
    """Check the whole ``heuristic`` section before any job runs.

    Builds every setting (group acting on the unit, teacher source possible, start vectors
    of length D and independent), the loop's and the training's configuration, and
    requires distinct setting names; raises :class:`HeuristicError` naming the problem.
    """
    heuristic_config(section)
    try:
        training_config(training, section.get("training", {}))
    except ValueError as err:
        raise HeuristicError(f"heuristic.training: {err}") from None
    names = [s["name"] for s in section["settings"]]
    if len(set(names)) != len(names):
        raise HeuristicError(f"heuristic.settings: names must be distinct, got {names}")
    for i, setting in enumerate(section["settings"]):
        try:
            problem = build_problem(setting)
            orthonormal_basis(setting.get("start", []), problem.group.dim_z)
        except ValueError as err:
            raise HeuristicError(f"heuristic.settings[{i}] ({setting['name']!r}): {err}") from None


def step_is_final(path) -> bool:
    """True if the step file at ``path`` ended the loop (status other than ``enlarged``)."""
    return int(read_dataset(path)["status"].values[0]) != STATUS["enlarged"]


def step_job(
    setting: Mapping, heuristic: Mapping, training: Mapping, step: int, previous, output,
    config: Mapping, threads: int | None = None,
) -> None:
    """Run step ``step`` of one setting and write its dataset to ``output``.

    ``previous``: the file of step j − 1 (None for j = 0, which starts from
    ``setting["start"]``); its ``next_basis`` is E_j.  ``heuristic`` holds the
    :class:`HeuristicConfig` keys plus ``training`` (overrides of ``training``).
    """
    problem = build_problem(setting)
    hcfg = heuristic_config(heuristic)
    tcfg = training_config(training, heuristic.get("training", {}))
    if step == 0:
        basis = orthonormal_basis(setting.get("start", []), problem.group.dim_z)
    else:
        prev = read_dataset(previous, config, lineage.heuristic_setting(setting["name"]))
        if int(prev["status"].values[0]) != STATUS["enlarged"]:
            raise HeuristicError(
                f"step {step - 1} of setting {problem.name!r} ({previous}) ended the loop; "
                f"there is no step {step}"
            )
        basis = prev["next_basis"].values[0][:, : int(prev["next_dim"].values[0])]
    ds = step_dataset(run_step(problem, basis, step, hcfg, tcfg, threads))
    write_dataset(ds, output, config,
                  f"SI-subspace discovery heuristic: setting {problem.name}, step {step}")


def setting_job(setting: Mapping, step_paths: Sequence, output, config: Mapping) -> None:
    """Gather the step files of one setting into its dataset (with angles to E^G)."""
    problem = build_problem(setting)
    scope = lineage.heuristic_setting(setting["name"])
    ds = setting_dataset(problem.name, problem.group.fixed_basis(),
                         [read_dataset(p, config, scope) for p in step_paths])
    write_dataset(ds, output, config, f"SI-subspace discovery heuristic: {problem.name}")


def combine_job(setting_paths: Sequence, output, config: Mapping) -> None:
    """Write ``heuristic.nc`` from the per-setting files (in the configured order); each
    must have been written under ``config``'s entry of its own setting."""
    settings = []
    for path in setting_paths:
        ds = read_dataset(path)
        name = str(ds["setting"].values)
        check_recorded_config(ds, path, config, lineage.heuristic_setting(name))
        settings.append(ds)
    ds = combine_settings(settings)
    write_dataset(ds, output, config, "SI-subspace discovery heuristic")
