"""The configuration: schema and cross-key checks, readable errors, builders."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import same_atoms
from hypothesis import given
from hypothesis import strategies as st

from mfsym.core.schemes import parse_pair
from mfsym.core.teachers import paper_teachers
from mfsym.pipeline.config import (
    ConfigError,
    build_group,
    build_teachers,
    canonical,
    check_config,
    check_semantics,
    grid_of,
    key_path,
    load_schema,
    particles_n,
    seed_blocks,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture()
def config() -> dict:
    return copy.deepcopy(load("config.yaml"))


def errors_of(config: dict) -> str:
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA)
        check_semantics(config)
    return str(err.value)


@pytest.mark.parametrize("name", ["config.yaml", "config/paper.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load(name)
    check_config(cfg, SCHEMA)
    grid = grid_of(cfg)
    assert len(grid.jobs()) == len(cfg["inits"]) * len(cfg["n_particles"]) * len(grid.blocks)


def test_paper_config_is_the_papers_grid():
    cfg = load("config/paper.yaml")
    assert cfg["n_particles"] == [5, 10, 50, 100, 500, 1000, 5000]
    assert len(cfg["seeds"]) == 10
    assert set(cfg["inits"]) == {"SI", "WI"}
    assert cfg["teachers"] == ["arbitrary", "WI", "SI"]
    # the four schemes of the paper, and orbit-averaged DA for the claims table
    assert cfg["schemes"] == ["vanilla", "DA", "DA-orbit", "FA", "EA"]
    t = cfg["training"]
    assert (t["alpha"], t["tau"], t["beta"], t["T"], t["batch_size"], t["input_std"]) == (
        50.0, 1e-4, 1e-6, 20.0, 20, 4.0
    )


def test_default_config_keeps_the_paper_hyperparameters():
    default, paper = load("config.yaml"), load("config/paper.yaml")
    assert default["training"] == {
        **paper["training"], "checkpoint_every": default["training"]["checkpoint_every"]
    }
    assert len(default["seeds"]) >= 2 and len(default["n_particles"]) >= 3


def test_unknown_scheme_names_key_and_allowed_values(config):
    config["schemes"] = ["vanilla", "DAA"]
    msg = errors_of(config)
    assert "schemes[1] = 'DAA'" in msg
    assert "vanilla, DA, DA-orbit, FA, EA" in msg


@pytest.mark.parametrize("bad", [0, -5])
def test_non_positive_n(config, bad):
    config["n_particles"] = [10, bad]
    msg = errors_of(config)
    assert f"n_particles[1] = {bad} is too small; it must be ≥ 1" in msg


@pytest.mark.parametrize("key", ["n_particles", "seeds", "schemes", "teachers", "inits"])
def test_empty_grid(config, key):
    config[key] = []
    assert f"{key} = [] is empty" in errors_of(config)


def test_negative_alpha(config):
    config["training"]["alpha"] = -1.0
    assert "training.alpha = -1.0 is too small; it must be > 0" in errors_of(config)


@pytest.mark.parametrize(
    ("path", "typo", "allowed"),
    [
        ((), "seed", "seeds"),
        (("training",), "alpah", "alpha"),
        (("figures",), "dpii", "dpi"),
        (("resources", "train"), "memory", "mem_mb"),
        (("group",), "nam", "name"),
    ],
)
def test_typo_anywhere_is_named_with_allowed_keys(config, path, typo, allowed):
    node = config
    for part in path:
        node = node[part]
    node[typo] = 1
    msg = errors_of(config)
    dotted = ".".join([*path, typo])
    assert f"unknown key {dotted!r}" in msg
    assert allowed in msg.split(f"unknown key {dotted!r}")[1].splitlines()[0]


def test_every_error_is_reported_at_once(config):
    config["schemes"] = ["vanila"]
    config["training"]["beta"] = -1
    config["extra"] = True
    msg = errors_of(config)
    assert "schemes[0]" in msg and "training.beta" in msg and "unknown key 'extra'" in msg


def test_missing_key(config):
    del config["training"]["tau"]
    assert "missing key 'training.tau'" in errors_of(config)


def test_null_or_positive_particles_n(config):
    config["figures"]["particles_N"] = 0
    msg = errors_of(config)
    assert "figures.particles_N = 0 is not allowed" in msg and "null" in msg


@pytest.mark.parametrize(
    ("key", "value", "grid"),
    [("particles_N", 7, "n_particles"), ("particles_seed", 99, "seeds"),
     ("curves_N", 3, "n_particles")],
)
def test_figure_runs_must_be_in_the_grid(config, key, value, grid):
    config["figures"][key] = value
    msg = errors_of(config)
    assert f"figures.{key} = {value}" in msg and f"from {grid}" in msg


def test_pairs_must_name_configured_schemes(config):
    config["schemes"] = ["vanilla", "DA", "FA"]
    msg = errors_of(config)
    assert "metrics.pairs[3] = 'vanilla-EA' names scheme 'EA'" in msg


@pytest.mark.parametrize("pair", ["DA-DA", "DA-vanilla"])
def test_pairs_must_be_distinct(config, pair):
    config["metrics"]["pairs"] = ["vanilla-DA", pair]
    assert "metrics.pairs[1]" in errors_of(config)


def test_paper_teachers_need_the_papers_setting(config):
    config["group"] = {"name": "cyclic", "dim": 3}
    config["data"]["teacher_source"] = "paper"
    assert "data.teacher_source = 'paper' is impossible" in errors_of(config)


def test_wrong_training_value_beyond_the_schema_is_named(config):
    config["training"]["n_snapshots"] = 1
    assert "training.n_snapshots" in errors_of(config)
    config["training"]["n_snapshots"] = 4
    config["training"]["backend"] = "fortran"  # a free string in the schema
    check_config(config, SCHEMA)
    msg = errors_of(config)  # the engine's own check, run before any job
    assert "training.backend = 'fortran'" in msg and "auto" in msg


def test_key_path():
    assert key_path(()) == "<config>"
    assert key_path(("training", "alpha")) == "training.alpha"
    assert key_path(("schemes", 1)) == "schemes[1]"
    assert key_path(("metrics", "pairs", 0)) == "metrics.pairs[0]"


@given(
    seeds=st.lists(st.integers(0, 10**6), min_size=1, max_size=30, unique=True),
    per_job=st.integers(1, 12),
)
def test_seed_blocks_partition_the_seeds_in_order(seeds, per_job):
    blocks = seed_blocks(seeds, per_job)
    assert [s for b in blocks.values() for s in b] == seeds
    assert all(1 <= len(b) <= per_job for b in blocks.values())
    assert len(blocks) == -(-len(seeds) // per_job)
    assert list(blocks) == [f"b{k}" for k in range(len(blocks))]


def test_grid_finds_the_block_of_a_seed(config):
    config["seeds"], config["seeds_per_job"] = [3, 1, 4, 5, 9], 2
    config["figures"]["particles_seed"] = 3
    grid = grid_of(config)
    assert grid.blocks == {"b0": (3, 1), "b1": (4, 5), "b2": (9,)}
    assert [grid.block_of(s) for s in (3, 1, 4, 5, 9)] == ["b0", "b0", "b1", "b1", "b2"]


def test_particles_n_defaults_to_the_largest(config):
    config["figures"]["particles_N"] = None
    assert particles_n(config) == max(config["n_particles"])
    config["figures"]["particles_N"] = config["n_particles"][0]
    assert particles_n(config) == config["n_particles"][0]


def test_parse_pair():
    assert parse_pair("vanilla-EA") == ("vanilla", "EA")
    with pytest.raises(ValueError, match="'A-B'"):
        parse_pair("vanilla")


def test_auto_teachers_are_the_papers_for_c2_matrix(config):
    group = build_group(config["group"], config["unit"])
    built = build_teachers(group, ["arbitrary", "WI", "SI"], config["data"])
    paper = paper_teachers(group)
    for kind in paper:
        np.testing.assert_array_equal(built[kind].particles, paper[kind].particles)


def test_random_teachers_have_their_symmetry():
    group = build_group({"name": "cyclic", "dim": 3}, {"name": "uv", "activation": "tanh"})
    data = {"teacher_source": "auto", "teacher_particles": 4, "teacher_scale": 0.5,
            "teacher_seed": 1}
    teachers = build_teachers(group, ["arbitrary", "WI", "SI"], data)
    wi, si = teachers["WI"].particles, teachers["SI"].particles
    for g in range(group.order):
        assert same_atoms(group.act(wi, g), wi, atol=1e-12)  # ν^G = ν: weakly invariant
    np.testing.assert_allclose(group.project(si), si, atol=1e-12)  # on E^G
    # all three come from the same base cloud
    np.testing.assert_allclose(group.project(teachers["arbitrary"].particles), si)
    assert not np.allclose(group.project(teachers["arbitrary"].particles),
                           teachers["arbitrary"].particles)


def test_canonical_sorts_keys_at_every_level_and_keeps_lists():
    a = {"b": {"y": 1, "x": [3, {"q": 1, "p": 2}]}, "a": 0}
    b = {"a": 0, "b": {"x": [3, {"p": 2, "q": 1}], "y": 1}}
    assert repr(canonical(a)) == repr(canonical(b))
    assert canonical(a) == a
    assert list(canonical(a)) == ["a", "b"]
    assert canonical({"l": [2, 1]})["l"] == [2, 1]
