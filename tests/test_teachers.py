"""Teachers: the App. F clouds (PAPER.md §3) and random teachers of each kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_setting, same_atoms
from hypothesis import given
from hypothesis import strategies as st

from mfsym.core.groups import FiniteGroup, c2_swap, cyclic_group, symmetric_group
from mfsym.core.teachers import (
    TEACHER_KINDS,
    Teacher,
    paper_teachers,
    random_teacher,
)

F64 = torch.float64
R2 = np.sqrt(2.0)


def network(setting, particles, x):
    """Φ(x) of a teacher cloud, float64 numpy in and out."""
    out = setting.unit.output(torch.tensor(particles, dtype=F64), torch.tensor(x, dtype=F64))
    return out.numpy()


def equivariance_gap(setting, particles, x) -> float:
    """max over g, samples of |Φ(g x) − g Φ(x)|."""
    g = setting.group
    base = network(setting, particles, x)
    return max(
        np.abs(network(setting, particles, x @ g.x[k].T) - base @ g.y[k].T).max()
        for k in range(g.order)
    )


def inputs(seed: int, n: int, dim: int) -> np.ndarray:
    return 4.0 * np.random.default_rng(seed).standard_normal((n, dim))


# ---- the App. F teachers ---------------------------------------------------------------------
def test_arbitrary_teacher_matches_appendix_f(c2_matrix):
    t = paper_teachers(c2_matrix.group)["arbitrary"]
    expected = [
        [-0.5, 0.0, 0.0, 0.25],
        [0.25, 0.5, 0.0, 0.5],
        [-0.25, 0.15, 0.5, 0.0],
        [0.0, -0.5, -0.25, 0.5],
        [0.35, -0.35, 0.25, 0.35],
    ]
    np.testing.assert_array_equal(t.particles, np.array(expected))


def test_wi_teacher_is_arbitrary_plus_swapped_images(c2_matrix):
    """M_P z = P z P maps [[a, b], [c, d]] to [[d, c], [b, a]]: the row reversed."""
    teachers = paper_teachers(c2_matrix.group)
    arb = teachers["arbitrary"].particles
    wi = teachers["WI"].particles
    assert wi.shape == (10, 4)
    np.testing.assert_array_equal(np.sort(wi, axis=0), np.sort(np.vstack([arb, arb[:, ::-1]]), 0))
    assert same_atoms(wi, np.vstack([arb, arb[:, ::-1]]), atol=0)


def test_si_teacher_matches_appendix_f(c2_matrix):
    """0.5 × (a I/√2 + b P/√2) for (a, b) in App. F, flattened row-major."""
    si = paper_teachers(c2_matrix.group)["SI"].particles
    pairs = [(1.0, 0.0), (0.5, 1.0), (-0.5, 0.3), (0.0, -1.0), (0.7, 0.7)]
    expected = np.array([[a, b, b, a] for a, b in pairs]) * 0.5 / R2
    np.testing.assert_allclose(si, expected, rtol=1e-15, atol=1e-16)


def test_paper_teacher_scale_multiplies_every_cloud(c2_matrix):
    one = paper_teachers(c2_matrix.group, scale=1.0)
    half = paper_teachers(c2_matrix.group)
    for kind in TEACHER_KINDS:
        np.testing.assert_allclose(half[kind].particles, 0.5 * one[kind].particles)


def test_paper_teachers_have_their_symmetries(c2_matrix):
    g = c2_matrix.group
    t = paper_teachers(g)
    x = inputs(0, 200, 2)
    assert equivariance_gap(c2_matrix, t["WI"].particles, x) < 1e-14
    assert equivariance_gap(c2_matrix, t["SI"].particles, x) < 1e-14
    assert equivariance_gap(c2_matrix, t["arbitrary"].particles, x) > 0.05
    np.testing.assert_allclose(g.distance_to_fixed(t["SI"].particles), 0.0, atol=1e-16)
    assert g.distance_to_fixed(t["arbitrary"].particles) > 0.1
    assert g.distance_to_fixed(t["WI"].particles) > 0.1  # WI, not SI
    # WI as a measure: ν^G = ν (each atom's image is in the cloud)
    for k in range(g.order):
        assert same_atoms(g.act(t["WI"].particles, k), t["WI"].particles, atol=1e-15)


@pytest.mark.parametrize(
    "gxy,unit",
    [(c2_swap, "uv"), (lambda: cyclic_group(3), "matrix"), (lambda: symmetric_group(3), "uv")],
    ids=["C2-uv", "C3-matrix", "S3-uv"],
)
def test_paper_teachers_refuse_other_settings(gxy, unit):
    with pytest.raises(ValueError, match="use random_teacher for other settings"):
        paper_teachers(make_setting(gxy(), unit).group)


def test_paper_teachers_accept_cyclic_group_of_order_two():
    """cyclic_group(2) is the swap group too; its element order may differ from c2_swap."""
    g = make_setting(cyclic_group(2), "matrix").group
    ref = paper_teachers(make_setting(c2_swap(), "matrix").group)
    for kind, t in paper_teachers(g).items():
        assert same_atoms(t.particles, ref[kind].particles, atol=0)


def test_paper_teachers_refuse_another_c2_action_on_x():
    """C₂ acting on X by a reflection (not the swap) gives the same |G|, D and dim E^G,
    but the App. F SI cloud would be off E^G."""
    refl = np.diag([1.0, -1.0])
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])
    xs, ys = np.stack([np.eye(2), refl]), np.stack([np.eye(2), swap])
    zs = np.stack([np.kron(b, a) for a, b in zip(xs, ys, strict=True)])
    g = FiniteGroup("C2-reflect", xs, ys, zs)
    assert (g.order, g.dim_z, g.dim_fixed) == (2, 4, 2)
    with pytest.raises(ValueError, match="'C2-reflect'"):
        paper_teachers(g)


# ---- random teachers -------------------------------------------------------------------------
RANDOM_SETTINGS = {
    "C2-matrix": make_setting(c2_swap(), "matrix", "sigmoid"),
    "S3-uv": make_setting(symmetric_group(3), "uv", "tanh"),
    "C3-matrix": make_setting(cyclic_group(3), "matrix", "relu"),
}


@pytest.mark.parametrize("name", sorted(RANDOM_SETTINGS))
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_random_teacher_kinds_have_their_symmetries(name, seed, n):
    s = RANDOM_SETTINGS[name]
    g = s.group
    x = inputs(seed, 64, g.dim_x)
    wi = random_teacher(g, "WI", n, np.random.default_rng(seed))
    si = random_teacher(g, "SI", n, np.random.default_rng(seed))
    arb = random_teacher(g, "arbitrary", n, np.random.default_rng(seed))
    assert (wi.name, si.name, arb.name) == ("WI", "SI", "arbitrary")
    assert wi.particles.shape == (g.order * n, g.dim_z)
    assert si.particles.shape == arb.particles.shape == (n, g.dim_z)
    assert equivariance_gap(s, wi.particles, x) < 1e-12
    assert equivariance_gap(s, si.particles, x) < 1e-12
    np.testing.assert_allclose(si.particles, g.project(arb.particles), atol=1e-15)
    np.testing.assert_allclose(g.distance_to_fixed(si.particles), 0.0, atol=1e-12)
    for k in range(g.order):
        assert same_atoms(g.act(wi.particles, k), wi.particles, atol=1e-12)


def test_random_arbitrary_teacher_is_not_equivariant(s3_uv):
    arb = random_teacher(s3_uv.group, "arbitrary", 4, np.random.default_rng(7))
    assert equivariance_gap(s3_uv, arb.particles, inputs(1, 64, 3)) > 0.01


def test_random_teacher_is_reproducible_and_scaled(c3_matrix):
    a = random_teacher(c3_matrix.group, "arbitrary", 3, np.random.default_rng(5), scale=2.0)
    b = random_teacher(c3_matrix.group, "arbitrary", 3, np.random.default_rng(5), scale=1.0)
    np.testing.assert_array_equal(a.particles, 2.0 * b.particles)


# ---- invalid input ---------------------------------------------------------------------------
def test_unknown_teacher_kind_is_named(c2_matrix):
    with pytest.raises(ValueError, match=r"unknown teacher 'EI'; allowed: \['arbitrary', 'WI'"):
        random_teacher(c2_matrix.group, "EI", 3, np.random.default_rng(0))


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_bad_teacher_size_is_named(c2_matrix, n):
    with pytest.raises(ValueError, match=f"n_particles must be a positive integer, got {n}"):
        random_teacher(c2_matrix.group, "WI", n, np.random.default_rng(0))


@pytest.mark.parametrize("particles", [np.zeros(4), np.zeros((0, 4)), np.zeros((2, 2, 2))])
def test_teacher_particles_must_be_a_cloud(particles):
    with pytest.raises(ValueError, match=r"teacher 'x': particles must have shape \(K, D\)"):
        Teacher("x", particles)
