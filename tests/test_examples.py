"""The worked examples of config/examples/, each at a tiny size.

Every property is checked against a hand count: dim E^G and the projector onto it are
written down from the example's group (not computed by the library), FA and EA from an SI
start must stay on that subspace, and the discovery heuristic (with the example's own
settings, at a smaller N and T) must recover it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mfsym.engine.training import RunSpec, train_stack
from mfsym.pipeline.config import (
    build_group,
    build_teachers,
    build_unit,
    check_config,
    check_semantics,
    load_schema,
    overlay,
    read_config_file,
    train_config,
)
from mfsym.pipeline.heuristic import build_problem
from mfsym.pipeline.targets import final_targets
from mfsym.studies.heuristic import discover_subspace, heuristic_config, training_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")
#: The heuristic's size in these tests (the examples use heuristic.N and .training.T).
TINY_HEURISTIC = {"N": 100, "T": 2.0}
MAX_ANGLE_DEG = 5.0


def unit_vector(d: int, *indices: int) -> np.ndarray:
    v = np.zeros(d)
    v[list(indices)] = 1.0
    return v / np.linalg.norm(v)


def hand_projector(*basis: np.ndarray) -> np.ndarray:
    b = np.stack(basis, axis=1)
    return b @ b.T


#: example → (dim E^G by hand, projector onto E^G by hand).
HAND = {
    # D4 acts on u ∈ R² (no fixed vector but 0) and trivially on v: E^G = {(0, 0, v₁, v₂)}.
    "d4": (2, hand_projector(unit_vector(4, 2), unit_vector(4, 3))),
    # {±I}, matrix unit: M_{−I} = (−I)⊗(−I) = I, every z is fixed.
    "sign": (9, np.eye(9)),
    # swap of coordinates 0, 1 on R³, matrix unit, z row-major (index 3i + j): P z Pᵀ = z
    # ties z00 = z11, z01 = z10, z02 = z12, z20 = z21; z22 is free.
    "swap3": (5, hand_projector(unit_vector(9, 0, 4), unit_vector(9, 1, 3), unit_vector(9, 2, 5),
                                unit_vector(9, 6, 7), unit_vector(9, 8))),
}


def example(name: str) -> dict:
    cfg = overlay(read_config_file(ROOT / "config.yaml"),
                  read_config_file(ROOT / "config" / "examples" / f"{name}.yaml"))
    check_config(cfg, SCHEMA)
    check_semantics(cfg)
    return cfg


def test_every_example_is_tested():
    assert {p.stem for p in (ROOT / "config" / "examples").glob("*.yaml")} == set(HAND)


@pytest.mark.parametrize("name", sorted(HAND))
def test_example_builds_figures_and_claims_only(name):
    """The example's run is the grid, the heuristic and the claims table, under its own
    results folder."""
    cfg = example(name)
    targets = final_targets(cfg)
    assert f"{cfg['results_dir']}/claims/claims.md" in targets
    assert f"{cfg['results_dir']}/figures/fig_rmd_si_init.pdf" in targets
    assert not any("noether" in t or "rotation" in t or "saddle" in t for t in targets)
    assert cfg["results_dir"] == f"results/examples/{name}"


@pytest.mark.parametrize("name", sorted(HAND))
def test_fixed_space_is_the_hand_count(name):
    cfg = example(name)
    dim, proj = HAND[name]
    for section in (cfg, cfg["heuristic"]["settings"][0]):
        group = build_group(section["group"], section["unit"])
        assert group.dim_fixed == dim
        np.testing.assert_allclose(group.reynolds(), proj, atol=1e-12)


@pytest.mark.parametrize("name", sorted(HAND))
def test_fa_and_ea_stay_on_the_fixed_space(name):
    """From an SI start, FA and EA keep every particle on the hand-written E^G (float64,
    every teacher); vanilla with the arbitrary teacher leaves it unless E^G is all of Z."""
    cfg = example(name)
    dim, proj = HAND[name]
    group = build_group(cfg["group"], cfg["unit"])
    unit = build_unit(cfg["group"], cfg["unit"])
    teachers = build_teachers(group, cfg["teachers"], cfg["data"])
    tcfg = train_config({**cfg["training"], "T": 1.0, "dtype": "float64", "n_snapshots": 2,
                         "n_eval": 64, "checkpoint_every": 0})
    runs = [RunSpec(t, s, 0) for t in cfg["teachers"] for s in ("FA", "EA", "vanilla")]
    res = train_stack(group, unit, teachers, runs, 20, "SI", tcfg)
    off = np.linalg.norm(res.final_particles - res.final_particles @ proj, axis=-1).max(-1)
    for run, dist in zip(runs, off, strict=True):
        if run.scheme in ("FA", "EA"):
            assert dist < 1e-9, (run, dist)
        elif run.teacher == "arbitrary" and dim < group.dim_z:
            assert dist > 1e-3, (run, dist)


@pytest.mark.parametrize("name", sorted(HAND))
def test_heuristic_recovers_the_fixed_space(name):
    cfg = example(name)
    section = cfg["heuristic"]
    setting = section["settings"][0]
    dim, proj = HAND[name]
    problem = build_problem(setting)
    found = discover_subspace(
        problem, heuristic_config({**section, "N": TINY_HEURISTIC["N"]}),
        training_config(cfg["training"], {**section["training"], "T": TINY_HEURISTIC["T"]}),
        start=setting["start"] or None)
    basis = found.final_basis
    assert basis.shape[1] == dim
    # principal angles between the recovered subspace and the hand-written E^G
    vals, vecs = np.linalg.eigh(proj)
    cosines = np.linalg.svd(basis.T @ vecs[:, vals > 0.5], compute_uv=False)
    assert np.degrees(np.arccos(np.clip(cosines.min(), -1, 1))) < MAX_ANGLE_DEG


def test_guide_is_linked_and_has_a_chapter_per_example():
    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "docs" / "own-study.md").read_text()
    assert "(docs/own-study.md)" in readme
    for name in HAND:
        assert f"`config/examples/{name}.yaml`" in guide
