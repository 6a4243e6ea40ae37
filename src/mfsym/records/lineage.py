"""Which part of the configuration determines each results file, and the check of it.

Every dataset records the configuration it was written under (``config_json``). A stage
that reads a file compares the part of that record which determines the file with the same
part of its own configuration, and refuses the file if they differ: a run file trained
under another ``training.alpha`` must never be aggregated under this one, however new its
modification time. Parts that do not determine the file (figure styling, resources) may
differ freely.

A *scope* is a sequence of dotted paths into the configuration. A path selects a section
or a single key (``"training"``, ``"training.alpha"``); a path starting with ``!``
excludes what it names. The longest matching path decides, so ``("heuristic",
"!heuristic.settings", "heuristic.settings.C2-matrix")`` keeps one entry of the settings.
Lists of mappings that all carry a distinct ``name`` are addressed by that name (their
order then does not matter); other lists are compared whole.

The scopes below follow the rules' parameters in ``workflow/rules``: what a job's output
depends on is its own parameters plus whatever determined its inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

MISSING = "<absent>"

TEACHERS = ("group", "unit", "teachers", "data")
EVAL_SAMPLE = ("group", "training.n_eval", "training.input_std", "training.eval_seed")
INITIAL = ("group", "unit", "training.init_std", "seeds", "seeds_per_job")
RUNS = (*TEACHERS, "training", "schemes", "seeds", "seeds_per_job", "metrics.baseline")
METRICS = (*RUNS, "metrics.pairs")
SUMMARY = (*METRICS, "inits", "n_particles")
HEURISTIC = ("training", "heuristic", "!heuristic.resources")
NOETHER = ("noether", "!noether.resources")
#: The deep stages (PAPER.md §10): the base training, the shared deep keys and the stage's
#: own section (``deep.mlp`` or ``deep.resnet``), not the other stage's.
DEEP_STAGES = ("mlp", "resnet")


def deep_stage(stage: str) -> tuple[str, ...]:
    """The scope of the dataset of one deep stage ("mlp" or "resnet")."""
    others = tuple(f"!deep.{s}" for s in DEEP_STAGES if s != stage)
    return ("training", "deep", "!deep.resources", *others)
ROTATION = ("training", "rotation", "!rotation.resources")
#: The saddle study (PAPER.md §12): ``saddle.nc`` depends on the whole section; a run file
#: of one N not on the analysis keys nor on the list of N (adding an N or changing the
#: escape level retrains nothing).
SADDLE = ("training", "saddle", "!saddle.resources")
SADDLE_RUNS = (*SADDLE, "!saddle.analysis", "!saddle.delta", "!saddle.n_particles")


def heuristic_setting(name: str) -> tuple[str, ...]:
    """The scope of the step and setting files of one heuristic setting."""
    return (*HEURISTIC, "!heuristic.settings", f"heuristic.settings.{name}")


class ConfigMismatchError(ValueError):
    """A file was written under a configuration that differs where it matters."""

    def __init__(self, path, differences: Sequence[tuple[str, object, object]]):
        self.path = path
        self.differences = list(differences)
        lines = [f"  {key}: file has {_show(a)}, config has {_show(b)}"
                 for key, a, b in self.differences]
        super().__init__(
            f"{path} was written under a different configuration; differing keys:\n"
            + "\n".join(lines) + "\nrebuild it under the current configuration"
        )


def _show(value) -> str:
    return value if value is MISSING else json.dumps(value, sort_keys=True)


def config_json(config: Mapping) -> str:
    """Canonical JSON of a configuration (sorted keys, no whitespace variance)."""
    return json.dumps(config, sort_keys=True, default=_jsonable, separators=(",", ":"))


def config_sha256(config: Mapping) -> str:
    return hashlib.sha256(config_json(config).encode()).hexdigest()


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _normal(config: Mapping) -> dict:
    """``config`` as plain JSON values (tuples as lists, numpy scalars as numbers)."""
    return json.loads(config_json(config))


def _named(items: list) -> bool:
    names = [item.get("name") for item in items if isinstance(item, dict)]
    return (
        bool(items) and len(names) == len(items) and all(isinstance(n, str) for n in names)
        and len(set(names)) == len(names)
    )


def _leaves(value, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, (*prefix, str(key)))
    elif isinstance(value, list) and _named(value):
        for item in value:
            yield from _leaves(item, (*prefix, item["name"]))
    else:
        yield prefix, value


def _rules(scope: Sequence[str]) -> list[tuple[tuple[str, ...], bool]]:
    if isinstance(scope, str):
        raise TypeError("a scope is a sequence of dotted paths, not one string")
    return [(tuple(p.removeprefix("!").split(".")), not p.startswith("!")) for p in scope]


def _in_scope(path: tuple[str, ...], rules) -> bool:
    best, keep = -1, False
    for prefix, include in rules:
        n = len(prefix)
        if n > best and path[:n] == prefix:
            best, keep = n, include
    return keep


def config_differences(
    recorded: Mapping, expected: Mapping, scope: Sequence[str]
) -> list[tuple[str, object, object]]:
    """``(dotted key, recorded value, expected value)`` for every leaf of ``scope`` that
    differs (a key absent on one side shows as ``<absent>``), sorted by key."""
    rules = _rules(scope)
    a = {p: v for p, v in _leaves(_normal(recorded)) if _in_scope(p, rules)}
    b = {p: v for p, v in _leaves(_normal(expected)) if _in_scope(p, rules)}
    return [
        (".".join(p), a.get(p, MISSING), b.get(p, MISSING))
        for p in sorted(set(a) | set(b))
        if a.get(p, MISSING) != b.get(p, MISSING)
    ]


def check_config(path, recorded: Mapping | None, expected: Mapping, scope: Sequence[str]):
    """Raise :class:`ConfigMismatchError` naming ``path`` and the differing keys if the
    ``scope`` of ``recorded`` differs from that of ``expected`` (``None``: no record)."""
    if recorded is None:
        raise ConfigMismatchError(path, [("(the whole configuration)", MISSING, "recorded")])
    differences = config_differences(recorded, expected, scope)
    if differences:
        raise ConfigMismatchError(path, differences)
