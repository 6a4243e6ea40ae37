"""The pipeline configuration: validation with readable messages, and library values.

The configuration is a plain mapping (``config.yaml``).  :func:`check_config` validates it
against the JSON schema and reports every problem by its dotted key (``training.alpha``,
``schemes[1]``) together with what is allowed; :func:`check_semantics` adds the checks a
schema cannot express (the group acts on the unit, the paper's teachers exist for it, the
scheme pairs name configured schemes, the particle figure's run is in the grid).
Before any job the workflow calls :func:`check_all`: values given with ``--config`` are
read as their schema types, and the output folders (``results_dir``, the wiped
``paper.build_dir``) may be neither the checkout, its sources nor its results
(:mod:`mfsym.pipeline.output_folders`).
The builders (:func:`build_group`, :func:`build_teachers`, :func:`seed_blocks`, …) turn the
validated sections into library objects; none of them reads a file except the schema.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from ..core.compact import ROTATION_GROUPS, QuadratureGroup, RotationXY, compact_group
from ..core.groups import (
    MAX_ORDER,
    FiniteGroup,
    GroupError,
    GroupXY,
    generate,
    group_xy,
    permutation_matrix,
)
from ..core.schemes import parse_pair
from ..core.teachers import Teacher, paper_teachers, random_teacher
from ..core.units import Unit, make_unit
from ..engine.run_inputs import cloud_size_problem
from ..engine.train_config import TrainConfig
from .output_folders import path_problems

TEACHER_SOURCES = ("auto", "paper", "random")


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key and what is allowed."""


# ---------------------------------------------------------------------------------------
# schema validation with readable messages
# ---------------------------------------------------------------------------------------
def read_config_file(path) -> dict:
    """A configuration file (YAML or JSON) as a mapping; a syntax error is reported as a
    :class:`ConfigError` naming the file, the line and the column."""
    try:
        with open(Path(path), encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"configuration file {str(path)!r}{where}: not valid YAML: "
                          f"{problem}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"configuration file {str(path)!r} must hold keys at its top level, "
                          f"not {type(config).__name__}")
    return config


def overlay(base: Mapping, over: Mapping) -> dict:
    """``base`` with every key of ``over`` replaced, mappings merged key by key (lists are
    replaced whole): how ``snakemake --configfile study.yaml`` lays a study's file over
    ``config.yaml``."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
    "maximum": "is too large; it must be ≤ {val}",
    "exclusiveMaximum": "is too large; it must be < {val}",
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
    """The unit σ* on X = Y = R^dim (``group.dim``) named by ``unit.name``/``activation``
    (and, for the mlp unit, ``hidden``/``representation`` when given)."""
    dim = int(group_cfg["dim"])
    extra = {k: unit_cfg[k] for k in ("hidden", "representation") if k in unit_cfg}
    return make_unit(unit_cfg["name"], dim, dim, unit_cfg["activation"], **extra)


#: Keys of a group section that only a compact group takes (and requires).
COMPACT_KEYS = ("quadrature_points", "symmetrized_points")
#: Keys of a group section that only the generated group takes (generators: required).
GENERATED_KEYS = ("generators", "label")
GENERATED = "generated"


def _section_keys(group_cfg: Mapping) -> None:
    """A compact group needs :data:`COMPACT_KEYS`, a generated group ``generators``; every
    other group refuses them, and a compact group refuses ``max_order``."""
    name = group_cfg["name"]
    compact = name in ROTATION_GROUPS
    for key in COMPACT_KEYS:
        if compact and key not in group_cfg:
            raise ConfigError(f"group.{key} is missing; the compact group {name!r} needs it "
                              "(an integer ≥ 1)")
        if not compact and key in group_cfg:
            raise ConfigError(f"group.{key} = {group_cfg[key]!r} applies only to the compact "
                              f"groups {list(ROTATION_GROUPS)}, not to {name!r}")
    if name == GENERATED and "generators" not in group_cfg:
        raise ConfigError("group.generators is missing; the group 'generated' needs it (a "
                          "list of generators, each {x: ..., y: ...}: a permutation or an "
                          "orthogonal matrix)")
    for key in GENERATED_KEYS:
        if name != GENERATED and key in group_cfg:
            raise ConfigError(f"group.{key} = {group_cfg[key]!r} applies only to the group "
                              f"'generated', not to {name!r}")
    if compact and "max_order" in group_cfg:
        raise ConfigError(f"group.max_order = {group_cfg['max_order']!r} applies only to "
                          f"finite groups, not to the compact group {name!r}")


def action_matrix(value, dim: int, where: str) -> np.ndarray:
    """A generator's action from the configuration: a permutation of 0..dim-1 (a list of
    integers, see :func:`~mfsym.core.groups.permutation_matrix`) or a dim × dim matrix
    (a list of rows).  ``where`` names the key in errors."""
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        if len(value) != dim:
            raise ConfigError(f"{where} = {value!r} is a permutation of {len(value)} "
                              f"coordinates; allowed: a permutation of 0..{dim - 1}")
        try:
            return permutation_matrix(value)
        except GroupError:
            raise ConfigError(f"{where} = {value!r} is not a permutation; allowed: each of "
                              f"0..{dim - 1} exactly once") from None
    mat = np.asarray(value, dtype=np.float64)
    if mat.shape != (dim, dim):
        raise ConfigError(f"{where} has shape {mat.shape}; allowed: a {dim} x {dim} matrix "
                          f"(dim = {dim}) or a permutation of 0..{dim - 1}")
    return mat


def generated_xy(group_cfg: Mapping) -> GroupXY:
    """The closure of ``group.generators`` on X = Y = R^dim, at most ``group.max_order``
    elements (:func:`~mfsym.core.groups.generate`)."""
    dim = int(group_cfg["dim"])
    gens_x, gens_y = [], []
    for k, gen in enumerate(group_cfg["generators"]):
        gens_x.append(action_matrix(gen["x"], dim, f"group.generators[{k}].x"))
        gens_y.append(action_matrix(gen.get("y", gen["x"]), dim, f"group.generators[{k}].y"))
    try:
        return generate(group_cfg.get("label", GENERATED), gens_x, gens_y, dim=dim,
                        max_order=int(group_cfg.get("max_order", MAX_ORDER)))
    except GroupError as err:
        raise ConfigError(f"group.generators: {err}") from None


def finite_xy(group_cfg: Mapping) -> GroupXY:
    """The finite group of a group section on X and Y: a preset (C2, cyclic, symmetric)
    or the closure of the generators; both bounded by ``group.max_order``."""
    if group_cfg["name"] == GENERATED:
        return generated_xy(group_cfg)
    try:
        return group_xy(group_cfg["name"], int(group_cfg["dim"]),
                        int(group_cfg.get("max_order", MAX_ORDER)))
    except GroupError as err:
        raise ConfigError(f"group: {err}") from None


def build_group(group_cfg: Mapping, unit_cfg: Mapping) -> FiniteGroup:
    """The validated :class:`FiniteGroup` of ``group.name`` acting on X, Y and the unit's Z.

    For a compact group (SO2, O2) it is the :class:`QuadratureGroup` of
    ``group.quadrature_points`` points, whose ν^G is the ``group.symmetrized_points`` orbit.
    A finite group's order is bounded by ``group.max_order`` before its elements are
    enumerated; a unit that cannot be equivariant under the action is refused.
    """
    _section_keys(group_cfg)
    unit = build_unit(group_cfg, unit_cfg)
    if group_cfg["name"] in ROTATION_GROUPS:
        compact = compact_group(unit, RotationXY(group_cfg["name"], int(group_cfg["dim"])))
        return compact.quadrature(group_cfg["quadrature_points"],
                                  group_cfg["symmetrized_points"])
    gxy = finite_xy(group_cfg)
    try:
        return unit.group(gxy)
    except ValueError as err:
        raise ConfigError(f"group/unit: {err}") from None


def _orbit_teacher(group: QuadratureGroup, base, data_cfg: Mapping) -> Teacher:
    """The WI teacher of a compact group: ``base``'s orbit under the
    ``data.teacher_orbit_points``-point subgroup (exactly equivariant for that subgroup)."""
    points = data_cfg.get("teacher_orbit_points")
    if points is None:
        raise ConfigError(f"data.teacher_orbit_points is missing; the WI teacher of the "
                          f"compact group {group.compact.name!r} needs it (an integer ≥ 1)")
    return Teacher("WI", group.compact.symmetrize(base, points))


def build_teachers(
    group: FiniteGroup, kinds: Sequence[str], data_cfg: Mapping
) -> dict[str, Teacher]:
    """Teacher clouds by kind.

    ``teacher_source`` "paper": the App. F clouds (C₂ on the matrix unit only); "random":
    one base cloud of ``teacher_particles`` atoms i.i.d. N(0, teacher_scale²) drawn with
    ``teacher_seed``, used as is (arbitrary), symmetrised (WI) or projected (SI); "auto":
    the paper's when they exist for this group, else random.  For a compact group the WI
    teacher is the base cloud's orbit under the ``teacher_orbit_points``-point subgroup.
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
        compact_wi = kind == "WI" and isinstance(group, QuadratureGroup)
        out[kind] = random_teacher(
            group, "arbitrary" if compact_wi else kind, int(data_cfg["teacher_particles"]), rng,
            float(data_cfg["teacher_scale"]),
        )
        if compact_wi:
            out[kind] = _orbit_teacher(group, out[kind].particles, data_cfg)
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
    baseline = config["metrics"].get("baseline")
    if baseline is not None and baseline not in config["schemes"]:
        problems.append(
            f"metrics.baseline = {baseline!r} is not in schemes; allowed: "
            f"{', '.join(config['schemes'])} or null"
        )
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
    except ConfigError:
        raise
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
    problems += _check_horizon(config)
    problems += [f"n_particles[{i}] = {n}: {problem}" for i, n in enumerate(config["n_particles"])
                 if (problem := cloud_size_problem(int(n), group.dim_z))]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def _check_horizon(config: Mapping) -> list[str]:
    """Every run of the grid takes at least one SGD step (N·T ≥ 1), named per N."""
    try:
        cfg = train_config(config["training"])
    except ConfigError:
        return []  # reported by check_semantics already
    problems = []
    for i, n in enumerate(config["n_particles"]):
        try:
            cfg.total_steps(int(n))
        except ValueError as err:
            problems.append(f"{err} (n_particles[{i}] = {n})")
    return problems


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


# ---------------------------------------------------------------------------------------
# values from the command line: strings read as the types the schema asks for
# ---------------------------------------------------------------------------------------
_NOT_READ = object()
_INTEGER_RE = re.compile(r"^[+-]?[0-9]+$")


def _resolved(node: Mapping, schema: Mapping) -> Mapping:
    """``node`` with its local ``$ref`` (``#/a/b``) replaced by the schema part it names."""
    while "$ref" in node:
        target = schema
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _alternatives(node: Mapping, schema: Mapping) -> list[Mapping]:
    """The plain schemas a value at ``node`` may match (its oneOf/anyOf branches, flattened)."""
    node = _resolved(node, schema)
    branches = node.get("oneOf") or node.get("anyOf")
    if not branches:
        return [node]
    return [alt for branch in branches for alt in _alternatives(branch, schema)]


def _types(node: Mapping) -> set[str]:
    kind = node.get("type", ())
    return {kind} if isinstance(kind, str) else set(kind)


def _read_string(text: str, kinds: set[str]):
    """``text`` read as one of the JSON types ``kinds``; :data:`_NOT_READ` when it is none."""
    word = text.strip()
    if "null" in kinds and word in ("null", "Null", "NULL", "~"):
        return None
    if "boolean" in kinds and word.lower() in ("true", "false"):
        return word.lower() == "true"
    if kinds & {"integer", "number"} and _INTEGER_RE.match(word):
        return int(word)
    if "number" in kinds:
        try:
            number = float(word)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    if kinds & {"array", "object"}:
        try:
            value = yaml.safe_load(word)
        except yaml.YAMLError:
            return _NOT_READ
        if isinstance(value, list) and "array" in kinds:
            return value
        if isinstance(value, dict) and "object" in kinds:
            return value
    return _NOT_READ


def coerce_types(value, schema: Mapping, node: Mapping | None = None):
    """``value`` with every string the schema wants as another type read as that type.

    ``snakemake --config key=value`` hands nested values over as strings (``training='{T:
    5}'`` gives ``{"T": "5"}``): where the schema asks for a number, an integer, a boolean,
    null, a list or a mapping and not for a string, the string is read as that type. A
    string that reads as none of them is kept, so that :func:`check_config` names the key,
    the value and the expected type; an integer where only a string is allowed becomes its
    text. Returns a new value; ``value`` is left unchanged.
    """
    options = _alternatives(schema if node is None else node, schema)
    if type(value) is int and all(_types(o) == {"string"} for o in options):
        return str(value)  # ``results_dir=2024``: Snakemake read the folder name as a number
    if isinstance(value, str):
        if any("string" in _types(o) or not _types(o) for o in options):
            return value
        for option in options:
            read = _read_string(value, _types(option))
            if read is not _NOT_READ:
                return coerce_types(read, schema, option)
        return value
    if isinstance(value, Mapping):
        props = next((o.get("properties", {}) for o in options if "object" in _types(o)), {})
        return {k: coerce_types(v, schema, props[k]) if k in props else v
                for k, v in value.items()}
    if isinstance(value, list):
        items = next((o.get("items") for o in options if "array" in _types(o)), None)
        return [coerce_types(v, schema, items) for v in value] if items else list(value)
    return value


# ---------------------------------------------------------------------------------------
# everything, before any job
# ---------------------------------------------------------------------------------------
def check_all(config: Mapping, schema: Mapping, root, workdir=None,
              checks: Sequence[Callable[[Mapping], list[str]]] = ()) -> dict:
    """The configuration as the rules see it, after every check.

    Command-line strings are read as their schema types (:func:`coerce_types`), then the
    schema (:func:`check_config`), the checks across keys (:func:`check_semantics`, then each
    of ``checks``, which returns its problems as lines) and the output folders
    (:func:`path_problems`) are checked. Raises :class:`ConfigError` naming each bad key,
    its value and what is allowed; returns the coerced configuration.  ``checks`` keeps
    the rules of a stage's own settings (:mod:`mfsym.pipeline.study_checks`) out of this
    module, which every training job imports.
    """
    config = coerce_types(config, schema)
    check_config(config, schema)
    problems = [p for check in checks for p in check(config)]
    problems += path_problems(config, schema, root, workdir)
    try:
        check_semantics(config)
    except ConfigError as err:
        lines = str(err).removeprefix("invalid configuration:").strip().splitlines()
        problems = [line.strip() for line in lines] + problems
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config
