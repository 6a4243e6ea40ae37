"""Finite groups: validation, the Reynolds projector P_E, E^G and the actions on clouds."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from conftest import make_setting, rotation_group, same_atoms, sorted_atoms
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.linalg import null_space

from mfsym.core.groups import (
    FiniteGroup,
    GroupError,
    c2_swap,
    cyclic_group,
    group_xy,
    permutation_matrix,
    symmetric_group,
)

SWAP = np.array([[0.0, 1.0], [1.0, 0.0]])

#: dim E^G counted by hand: for the matrix unit, the orbits of G on index pairs (i, j);
#: for the uv unit, twice the orbits of G on coordinates (rotations fix only 0 in R²).
EXPECTED_DIM_FIXED = {
    "C2-matrix": 2,  # {(0,0),(1,1)}, {(0,1),(1,0)}
    "C2-uv": 2,
    "C3-matrix": 3,  # 9 pairs in orbits of 3
    "C3-uv": 2,
    "S3-matrix": 2,  # diagonal, off-diagonal
    "S3-uv": 2,
    "R3-uv": 0,
}


def finite_floats(lo=-5.0, hi=5.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def clouds(dim: int, max_n: int = 6):
    return st.integers(1, max_n).flatmap(
        lambda n: arrays(np.float64, (n, dim), elements=finite_floats())
    )


# ---- the standard groups -------------------------------------------------------------------
def test_c2_swap_is_identity_and_swap():
    g = c2_swap()
    assert g.name == "C2"
    assert sorted(m.tolist() for m in g.x) == sorted([np.eye(2).tolist(), SWAP.tolist()])
    np.testing.assert_array_equal(g.x, g.y)


@pytest.mark.parametrize("perm", [[0, 1, 2], [1, 2, 0], [2, 0, 1], [1, 0, 2]])
def test_permutation_matrix_moves_coordinate_i_to_perm_i(perm):
    v = np.array([10.0, 20.0, 30.0])
    out = permutation_matrix(perm) @ v
    for i, p in enumerate(perm):
        assert out[p] == v[i]


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_cyclic_group_is_generated_by_one_shift(d):
    g = cyclic_group(d)
    assert g.x.shape == (d, d, d)
    gen = next(m for m in g.x if d == 1 or not np.allclose(m, np.eye(d)))
    powers = [np.linalg.matrix_power(gen, k) for k in range(d)]
    assert same_atoms(np.reshape(powers, (d, -1)), np.reshape(g.x, (d, -1)))
    assert np.allclose(np.linalg.matrix_power(gen, d), np.eye(d))


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_symmetric_group_holds_every_permutation_once(d):
    g = symmetric_group(d)
    assert g.x.shape[0] == math.factorial(d)
    expected = np.stack([permutation_matrix(p) for p in itertools.permutations(range(d))])
    assert same_atoms(g.x.reshape(len(g.x), -1), expected.reshape(len(expected), -1))


def test_group_xy_looks_up_names():
    assert group_xy("C2").name == "C2"
    assert group_xy("cyclic", 4).x.shape == (4, 4, 4)
    assert group_xy("symmetric", 3).x.shape == (6, 3, 3)


def test_standard_groups_are_valid_representations(any_setting):
    g = any_setting.group
    assert isinstance(g, FiniteGroup)
    eye = np.eye(g.dim_z)
    np.testing.assert_allclose(g.z[g.identity_index()], eye, atol=1e-12)
    inv = g.inverse_indices()
    for k in range(g.order):
        np.testing.assert_allclose(g.z[k] @ g.z[inv[k]], eye, atol=1e-12)
        np.testing.assert_allclose(g.x[k] @ g.x[inv[k]], np.eye(g.dim_x), atol=1e-12)


# ---- the Reynolds projector and E^G ----------------------------------------------------------
def test_reynolds_is_an_orthogonal_projector(any_setting):
    p = any_setting.group.reynolds()
    np.testing.assert_allclose(p @ p, p, atol=1e-12)
    np.testing.assert_allclose(p, p.T, atol=0)


def test_reynolds_range_is_the_common_fixed_space(any_setting):
    """range P_E = ∩_g ker(M_g − I), the null space of the stacked (M_g − I)."""
    g = any_setting.group
    stacked = np.concatenate([m - np.eye(g.dim_z) for m in g.z])
    fixed = null_space(stacked)
    np.testing.assert_allclose(g.reynolds(), fixed @ fixed.T, atol=1e-10)
    for m in g.z:  # P_E absorbs every group element on both sides
        np.testing.assert_allclose(m @ g.reynolds(), g.reynolds(), atol=1e-12)
        np.testing.assert_allclose(g.reynolds() @ m, g.reynolds(), atol=1e-12)


def test_fixed_basis_is_orthonormal_and_spans_the_range(any_setting):
    g = any_setting.group
    basis = g.fixed_basis()
    k = EXPECTED_DIM_FIXED[any_setting.label.rsplit("-", 1)[0]]
    assert basis.shape == (g.dim_z, k)
    assert g.dim_fixed == k
    np.testing.assert_allclose(basis.T @ basis, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(basis @ basis.T, g.reynolds(), atol=1e-12)
    for m in g.z:
        np.testing.assert_allclose(m @ basis, basis, atol=1e-12)


def test_c2_matrix_fixed_space_is_span_of_identity_and_swap(c2_matrix):
    """E^G = {[[a, b], [b, a]]} with orthonormal basis I/√2, P/√2 (PAPER.md §2)."""
    g = c2_matrix.group
    expected = np.stack([np.eye(2).ravel(), SWAP.ravel()], axis=1) / np.sqrt(2)
    assert g.dim_fixed == 2
    np.testing.assert_allclose(g.fixed_basis() @ g.fixed_basis().T, expected @ expected.T)
    a, b = 0.3, -1.7
    z = np.array([[a, b], [b, a]]).ravel()
    np.testing.assert_allclose(g.reynolds() @ z, z, atol=1e-15)
    # P_E(z) = (z + P z P)/2 for a generic z
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(g.reynolds() @ w.ravel(), ((w + SWAP @ w @ SWAP) / 2).ravel())


def test_matrix_action_is_conjugation(c3_matrix):
    """M_g vec(z) = vec(g z gᵀ) for the row-major flattening."""
    g = c3_matrix.group
    z = np.arange(9.0).reshape(3, 3) ** 1.5
    for k in range(g.order):
        np.testing.assert_allclose(g.z[k] @ z.ravel(), (g.y[k] @ z @ g.x[k].T).ravel())


# ---- actions on clouds ---------------------------------------------------------------------
PERMUTATION_SETTINGS = {
    "C2-matrix": make_setting(c2_swap(), "matrix"),
    "S3-uv": make_setting(symmetric_group(3), "uv"),
    "C3-matrix": make_setting(cyclic_group(3), "matrix"),
}


@pytest.mark.parametrize("name", sorted(PERMUTATION_SETTINGS))
@given(data=st.data())
def test_symmetrized_cloud_is_invariant_as_a_measure(name, data):
    g = PERMUTATION_SETTINGS[name].group
    cloud = data.draw(clouds(g.dim_z))
    sym = g.symmetrize(cloud)
    assert sym.shape == (g.order * len(cloud), g.dim_z)
    for k in range(g.order):
        # permutation representations move coordinates exactly: compare sorted atoms
        np.testing.assert_array_equal(sorted_atoms(g.act(sym, k)), sorted_atoms(sym))
    np.testing.assert_array_equal(sym[: len(cloud)], g.act(cloud, 0))


@given(cloud=clouds(4))
def test_symmetrized_cloud_is_invariant_under_rotations(cloud):
    """Non-permutation action (rotations by 2π/3): equality as measures up to rounding."""
    g = make_setting(rotation_group(3), "uv", "tanh").group
    sym = g.symmetrize(cloud)
    for k in range(g.order):
        assert same_atoms(g.act(sym, k), sym, atol=1e-9)


@given(cloud=clouds(6))
def test_symmetrize_of_a_wi_cloud_repeats_it(cloud):
    g = make_setting(symmetric_group(3), "uv").group
    wi = g.symmetrize(cloud)
    assert same_atoms(g.symmetrize(wi), np.tile(wi, (g.order, 1)), atol=1e-12)


@given(cloud=clouds(9))
def test_projected_cloud_lies_on_fixed_space(cloud):
    g = make_setting(cyclic_group(3), "matrix").group
    proj = g.project(cloud)
    for m in g.z:
        np.testing.assert_allclose(proj @ m.T, proj, atol=1e-12)
    np.testing.assert_allclose(g.project(proj), proj, atol=1e-12)
    np.testing.assert_allclose(g.distance_to_fixed(proj), 0.0, atol=1e-12)
    # the residual is orthogonal to E^G, so the squared distance splits (Pythagoras)
    resid = cloud - proj
    np.testing.assert_allclose((resid * proj).sum(), 0.0, atol=1e-9)
    np.testing.assert_allclose(
        g.distance_to_fixed(cloud) ** 2, (resid**2).sum(1).mean(), rtol=1e-12, atol=1e-15
    )


@given(cloud=clouds(6))
def test_symmetrize_then_mean_is_projection_of_mean(cloud):
    """The barycentre of ν^G is P_E applied to the barycentre of ν."""
    g = make_setting(symmetric_group(3), "uv").group
    np.testing.assert_allclose(
        g.symmetrize(cloud).mean(0), g.project(cloud.mean(0, keepdims=True))[0], atol=1e-12
    )


def test_actions_broadcast_over_leading_axes(s3_uv):
    g = s3_uv.group
    clouds_ = np.random.default_rng(0).standard_normal((2, 3, 5, g.dim_z))
    sym = g.symmetrize(clouds_)
    assert sym.shape == (2, 3, g.order * 5, g.dim_z)
    np.testing.assert_allclose(sym[1, 2], g.symmetrize(clouds_[1, 2]))
    np.testing.assert_allclose(g.project(clouds_)[0, 1], g.project(clouds_[0, 1]))
    assert g.distance_to_fixed(clouds_).shape == (2, 3)


# ---- invalid input ---------------------------------------------------------------------------
def _group(x, y=None, z=None, name="bad"):
    y = x if y is None else y
    z = x if z is None else z
    return FiniteGroup(name, np.asarray(x), np.asarray(y), np.asarray(z))


def test_rejects_a_set_not_closed_under_products():
    r90 = np.array([[0.0, -1.0], [1.0, 0.0]])  # r90² = −I is missing
    with pytest.raises(GroupError, match="not closed"):
        _group([np.eye(2), r90])


def test_rejects_a_set_without_identity():
    with pytest.raises(GroupError, match="identity"):
        _group([SWAP])


def test_rejects_a_non_orthogonal_element():
    shear = np.array([[1.0, 1.0], [0.0, 1.0]])
    with pytest.raises(GroupError, match="element 1 is not orthogonal"):
        _group([np.eye(2), shear])


def test_rejects_repeated_elements():
    with pytest.raises(GroupError, match="elements 0 and 1 are equal"):
        _group([np.eye(2), np.eye(2)])


@pytest.mark.parametrize(
    "x",
    [np.eye(2), np.zeros((0, 2, 2)), np.zeros((1, 2, 3)), np.eye(2)[None, None]],
    ids=["2d", "empty", "non-square", "4d"],
)
def test_rejects_badly_shaped_representations(x):
    with pytest.raises(GroupError, match="X-representation must have shape"):
        FiniteGroup("bad", x, np.eye(2)[None], np.eye(2)[None])


def test_rejects_representations_of_different_orders():
    with pytest.raises(GroupError, match="X has 2, Y has 1"):
        FiniteGroup("bad", np.stack([np.eye(2), SWAP]), np.eye(2)[None], np.eye(2)[None])


def test_rejects_non_finite_entries():
    with pytest.raises(GroupError, match="non-finite"):
        _group([np.array([[1.0, np.nan], [0.0, 1.0]])])


def test_closure_is_checked_on_the_joint_action():
    """The swap on X and Y may act on Z by any involution, but not by an element of
    order 4: then (P, P, r90)² = (I, I, −I) is missing from the set."""
    xy = np.stack([np.eye(2), SWAP])
    g = FiniteGroup("ok", xy, xy, np.stack([np.eye(2), np.diag([1.0, -1.0])]))
    assert g.dim_fixed == 1
    r90 = np.array([[0.0, -1.0], [1.0, 0.0]])
    with pytest.raises(GroupError, match="not closed"):
        FiniteGroup("bad", xy, xy, np.stack([np.eye(2), r90]))


@pytest.mark.parametrize("perm", [[0, 0], [1, 2], [0, 2, 3]])
def test_permutation_matrix_rejects_non_permutations(perm):
    with pytest.raises(GroupError, match="not a permutation"):
        permutation_matrix(perm)


@pytest.mark.parametrize("ctor", [cyclic_group, symmetric_group])
@pytest.mark.parametrize("d", [0, -1, 2.5])
def test_group_constructors_reject_bad_dimensions(ctor, d):
    with pytest.raises(GroupError, match=repr(d).replace(".", r"\.")):
        ctor(d)


def test_group_xy_rejects_unknown_names_and_c2_dimension():
    with pytest.raises(ValueError, match=r"unknown group 'dihedral'; allowed: \['C2', "):
        group_xy("dihedral", 3)
    with pytest.raises(ValueError, match="dim=3"):
        group_xy("C2", 3)


@pytest.mark.parametrize("shape", [(4,), (5, 3), (2, 5, 9)])
def test_cloud_of_wrong_shape_is_rejected(c2_matrix, shape):
    g = c2_matrix.group
    for fn in (g.project, g.symmetrize, lambda c: g.act(c, 1), g.distance_to_fixed):
        with pytest.raises(ValueError, match=r"cloud must have shape \(\.\.\., N, D\) with D = 4"):
            fn(np.zeros(shape))
