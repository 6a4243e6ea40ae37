"""The pipeline configuration: validation with readable messages, and library values.

The configuration is a plain mapping (``config.yaml``).  :func:`check_config` validates it
against the JSON schema and reports every problem by its dotted key (``training.alpha``,
``schemes[1]``) together with what is allowed; :func:`check_semantics` adds the checks a
schema cannot express (the group acts on the unit, the paper's teachers exist for it, the
scheme pairs name configured schemes, the particle figure's run is in the grid).
The builders (:func:`build_group`, :func:`build_teachers`, :func:`seed_blocks`, …) turn the
validated sections into library objects; none of them reads a file except the schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from ..core.groups import FiniteGroup, group_xy
from ..core.schemes import parse_pair
from ..core.teachers import Teacher, paper_teachers, random_teacher
from ..core.units import Unit, make_unit
from ..engine.training import TrainConfig

TEACHER_SOURCES = ("auto", "paper", "random")


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key and what is allowed."""


# ---------------------------------------------------------------------------------------
# schema validation with readable messages
# ---------------------------------------------------------------------------------------
def load_schema(path) -> dict:
    """The JSON schema (YAML or JSON file) as a dict."""
    with open(Path(path), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def key_path(path: Sequence) -> str:
    """Dotted key of a location in the config: ``("training", "alpha")`` → ``training.alpha``,
    ``("schemes", 1)`` → ``schemes[1]``; the root is ``<config>``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<config>"


def _allowed_keys(schema: Mapping) -> list[str]:
    return sorted(schema.get("properties", {}))


#: What a failed check of this kind means, given the schema value ``val``.
_PROBLEMS = {
    "minimum": "is too small; it must be ≥ {val}",
    "exclusiveMinimum": "is too small; it must be > {val}",
    "minItems": "is empty or too short; it needs at least {val} value(s)",
    "uniqueItems": "lists a value more than once",
    "type": "has the wrong type; expected {val}",
    "pattern": "is not allowed; it must match {val}",
    "minLength": "is too short; it needs at least {val} character(s)",
}


def _describe(error: ValidationError) -> list[str]:
    """One line per problem in ``error``, naming the key and the allowed values."""
    where = key_path(error.absolute_path)
    kind, inst, sch = error.validator, error.instance, error.schema
    val = error.validator_value
    if kind == "additionalProperties":
        allowed = _allowed_keys(sch)
        extra = sorted(set(inst) - set(allowed))
        return [
            f"unknown key {key_path([*error.absolute_path, k])!r}; allowed keys"
            f"{'' if where == '<config>' else ' under ' + repr(where)}: {', '.join(allowed)}"
            for k in extra
        ]
    if kind == "enum":
        return [f"{where} = {inst!r} is not allowed; allowed values: {', '.join(map(str, val))}"]
    if kind == "required":
        missing = [k for k in val if k not in inst]
        return [f"missing key {key_path([*error.absolute_path, k])!r}" for k in missing]
    if kind in _PROBLEMS:
        return [f"{where} = {inst!r} {_PROBLEMS[kind].format(val=val)}"]
    if kind in ("oneOf", "anyOf"):
        options = "; or ".join(
            " ".join(_describe(sub)).replace(f"{where} = {inst!r} ", "") for sub in error.context
        )
        return [f"{where} = {inst!r} is not allowed: {options}"]
    return [f"{where}: {error.message}"]


def check_config(config: Mapping, schema: Mapping) -> None:
    """Validate ``config`` against ``schema``; raise :class:`ConfigError` listing every error."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.path])
    lines = [line for err in errors for line in _describe(err)]
    if lines:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


# ---------------------------------------------------------------------------------------
# builders: config sections → library values
# ---------------------------------------------------------------------------------------
def build_unit(group_cfg: Mapping, unit_cfg: Mapping) -> Unit:
    """The unit σ* on X = Y = R^dim (``group.dim``) named by ``unit.name``/``activation``."""
    dim = int(group_cfg["dim"])
    return make_unit(unit_cfg["name"], dim, dim, unit_cfg["activation"])


def build_group(group_cfg: Mapping, unit_cfg: Mapping) -> FiniteGroup:
    """The validated :class:`FiniteGroup` of ``group.name`` acting on X, Y and the unit's Z."""
    unit = build_unit(group_cfg, unit_cfg)
    return unit.group(group_xy(group_cfg["name"], int(group_cfg["dim"])))


def build_teachers(
    group: FiniteGroup, kinds: Sequence[str], data_cfg: Mapping
) -> dict[str, Teacher]:
    """Teacher clouds by kind.

    ``teacher_source`` "paper": the App. F clouds (C₂ on the matrix unit only); "random":
    one base cloud of ``teacher_particles`` atoms i.i.d. N(0, teacher_scale²) drawn with
    ``teacher_seed``, used as is (arbitrary), symmetrised (WI) or projected (SI); "auto":
    the paper's when they exist for this group, else random.
    """
    source = data_cfg["teacher_source"]
    if source not in TEACHER_SOURCES:
        raise ConfigError(
            f"data.teacher_source = {source!r} is not allowed; allowed values: "
            f"{', '.join(TEACHER_SOURCES)}"
        )
    if source in ("auto", "paper"):
        try:
            paper = paper_teachers(group, float(data_cfg["teacher_scale"]))
            return {k: paper[k] for k in kinds}
        except ValueError as err:
            if source == "paper":
                raise ConfigError(
                    f"data.teacher_source = 'paper' is impossible here: {err}"
                ) from None
    out = {}
    for kind in kinds:
        rng = np.random.default_rng(int(data_cfg["teacher_seed"]))  # same base for each kind
        out[kind] = random_teacher(
            group, kind, int(data_cfg["teacher_particles"]), rng, float(data_cfg["teacher_scale"])
        )
    return out


def train_config(training_cfg: Mapping) -> TrainConfig:
    """:class:`TrainConfig` from the ``training`` section (errors name ``training.<key>``)."""
    try:
        return TrainConfig.from_dict(training_cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def seed_blocks(seeds: Sequence[int], per_job: int) -> dict[str, tuple[int, ...]]:
    """Consecutive blocks of ``per_job`` seeds, labelled ``b0``, ``b1``, … (one job each)."""
    if int(per_job) < 1:
        raise ConfigError(f"seeds_per_job = {per_job!r} is too small; it must be ≥ 1")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds is empty; it needs at least 1 value")
    return {
        f"b{k}": tuple(seeds[i : i + per_job])
        for k, i in enumerate(range(0, len(seeds), int(per_job)))
    }


# ---------------------------------------------------------------------------------------
# checks across keys
# ---------------------------------------------------------------------------------------
def _check_pairs(config: Mapping) -> list[str]:
    problems, seen = [], set()
    for i, pair in enumerate(config["metrics"]["pairs"]):
        try:
            a, b = parse_pair(pair)
        except ValueError as err:
            problems.append(f"metrics.pairs[{i}]: {err}")
            continue
        for s in (a, b):
            if s not in config["schemes"]:
                problems.append(
                    f"metrics.pairs[{i}] = {pair!r} names scheme {s!r}, which is not in "
                    f"schemes; allowed: {', '.join(config['schemes'])}"
                )
        if a == b:
            problems.append(f"metrics.pairs[{i}] = {pair!r} compares a scheme with itself")
        if frozenset((a, b)) in seen:
            problems.append(f"metrics.pairs[{i}] = {pair!r} repeats an earlier pair")
        seen.add(frozenset((a, b)))
    return problems


def _check_particle_figure(config: Mapping) -> list[str]:
    fig, problems = config["figures"], []
    for key, grid in (("particles_N", "n_particles"), ("particles_seed", "seeds"),
                      ("particles_init", "inits"), ("curves_N", "n_particles")):
        value = fig[key]
        if value is not None and value not in config[grid]:
            problems.append(
                f"figures.{key} = {value!r} is not in the grid; allowed values "
                f"(from {grid}): {', '.join(map(str, config[grid]))}"
            )
    return problems


def check_semantics(config: Mapping) -> None:
    """Checks beyond the schema; raises :class:`ConfigError` naming each bad key."""
    problems = []
    try:
        group = build_group(config["group"], config["unit"])
    except ValueError as err:
        raise ConfigError(f"group/unit: {err}") from None
    try:
        build_teachers(group, config["teachers"], config["data"])
    except ValueError as err:
        problems.append(str(err))
    try:
        train_config(config["training"])
    except ConfigError as err:
        problems.append(str(err))
    problems += _check_pairs(config)
    problems += _check_particle_figure(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------
# what the rules need
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """The grid of training jobs: one per (init, N, seed block)."""

    inits: tuple[str, ...]
    n_values: tuple[int, ...]
    blocks: dict[str, tuple[int, ...]]

    def jobs(self) -> list[tuple[str, int, str]]:
        return [(i, n, b) for i in self.inits for n in self.n_values for b in self.blocks]

    def block_of(self, seed: int) -> str:
        return next(label for label, seeds in self.blocks.items() if seed in seeds)


def grid_of(config: Mapping) -> Grid:
    """The training grid of a schema-valid configuration, after :func:`check_semantics`."""
    check_semantics(config)
    return Grid(
        inits=tuple(config["inits"]),
        n_values=tuple(int(n) for n in config["n_particles"]),
        blocks=seed_blocks(config["seeds"], config["seeds_per_job"]),
    )


def canonical(value):
    """``value`` with every mapping's keys sorted, recursively (lists keep their order).

    Rule parameters built from it do not change when the keys of the configuration file are
    merely reordered, so that alone never triggers a rerun.
    """
    if isinstance(value, Mapping):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def particles_n(config: Mapping) -> int:
    """N of the particle figures: ``figures.particles_N`` or the largest N of the grid."""
    value = config["figures"]["particles_N"]
    return int(value) if value is not None else max(int(n) for n in config["n_particles"])
