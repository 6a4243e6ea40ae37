"""Exact W₂ and RMD between empirical measures, against brute force and closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mfsym.core.groups import c2_swap, symmetric_group
from mfsym.core.units import make_unit
from mfsym.measure.transport import (
    rmd,
    rmd2,
    rmd_to_projected,
    rmd_to_symmetrized,
    second_moment,
    w2_squared,
    w2_squared_to_projection,
)

ELEM = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


def cloud_pair(max_n: int = 6, max_d: int = 4):
    """Two clouds with the same number of atoms n ≤ max_n in R^d."""

    def two(shape):
        return st.tuples(*(arrays(np.float64, shape, elements=ELEM) for _ in range(2)))

    return st.tuples(st.integers(1, max_n), st.integers(1, max_d)).flatmap(two)


def brute_force_w2(a: np.ndarray, b: np.ndarray) -> float:
    """min over all permutations σ of (1/n) Σᵢ ‖aᵢ − b_σ(i)‖² (Birkhoff: optimal for n = m)."""
    n = len(a)
    return min(float(((a - b[list(p)]) ** 2).sum() / n) for p in itertools.permutations(range(n)))


def random_projector(rng, dim: int, rank: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    return q @ q.T


# ---- W₂ ------------------------------------------------------------------------------------
@given(pair=cloud_pair())
def test_w2_equals_brute_force_over_permutations(pair):
    a, b = pair
    np.testing.assert_allclose(w2_squared(a, b), brute_force_w2(a, b), rtol=1e-10, atol=1e-9)


@given(pair=cloud_pair(max_n=4), k=st.integers(2, 3))
def test_unequal_sizes_agree_with_replicated_atoms(pair, k):
    """ν with n atoms equals the measure with each atom repeated k times: W₂(ν, μ_{kn}) is
    the same whether solved by the network simplex (n vs k·n) or the assignment (k·n)."""
    a, _ = pair
    b = np.random.default_rng(len(a)).standard_normal((k * len(a), a.shape[1]))
    replicated = np.repeat(a, k, axis=0)
    np.testing.assert_allclose(w2_squared(a, b), w2_squared(replicated, b), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(w2_squared(b, a), w2_squared(b, replicated), rtol=1e-9, atol=1e-9)


def test_unequal_sizes_against_brute_force():
    """n = 2 vs 4 atoms: brute force over the assignments of the replicated cloud."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((4, 3))
    np.testing.assert_allclose(w2_squared(a, b), brute_force_w2(np.repeat(a, 2, 0), b))


@given(pair=cloud_pair(), shift=st.lists(ELEM, min_size=4, max_size=4))
def test_w2_translation_identities(pair, shift):
    a, b = pair
    t = np.asarray(shift[: a.shape[1]])
    np.testing.assert_allclose(w2_squared(a + t, b + t), w2_squared(a, b), rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(w2_squared(a, a + t), (t**2).sum(), rtol=1e-9, atol=1e-9)


def test_w2_of_point_masses_is_squared_distance():
    assert w2_squared([[0.0, 0.0]], [[3.0, 4.0]]) == 25.0
    # two atoms each: crossing the assignment would cost more
    assert w2_squared([[0.0], [10.0]], [[11.0], [1.0]]) == 1.0


# ---- RMD -----------------------------------------------------------------------------------
@given(pair=cloud_pair())
def test_rmd_is_a_symmetric_number_in_unit_interval(pair):
    a, b = pair
    r = rmd(a, b)
    assert 0.0 <= r <= 1.0
    np.testing.assert_allclose(r, rmd(b, a), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rmd2(a, b), r**2, rtol=1e-12, atol=1e-15)
    assert rmd(a, a) == 0.0
    m2 = 2 * (a**2).sum(1).mean() + 2 * (b**2).sum(1).mean()
    if m2 > 0:
        np.testing.assert_allclose(rmd2(a, b), w2_squared(a, b) / m2, rtol=1e-12, atol=1e-15)


def test_rmd_extreme_values():
    a = np.array([[1.0, 2.0], [-3.0, 0.5]])
    np.testing.assert_allclose(rmd2(a, np.zeros((1, 2))), 0.5)  # W₂² = E‖z‖², M₂ = 2 E‖z‖²
    np.testing.assert_allclose(rmd([[1.0, 1.0]], [[-1.0, -1.0]]), 1.0)  # δ_a vs δ_{−a}
    assert rmd(np.zeros((3, 2)), np.zeros((2, 2))) == 0.0
    np.testing.assert_allclose(second_moment(a), 2 * (5.0 + 9.25) / 2)


# ---- closed forms for projections and symmetrisations -----------------------------------------
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), dim=st.integers(1, 5), data=st.data())
def test_projection_closed_form_equals_the_solver(seed, n, dim, data):
    """Brenier: z ↦ P z is optimal, so W₂²(ν, P#ν) = E‖z − P z‖² = the assignment value."""
    rank = data.draw(st.integers(0, dim))
    rng = np.random.default_rng(seed)
    p = random_projector(rng, dim, rank)
    a = 3 * rng.standard_normal((n, dim))
    closed = w2_squared_to_projection(a, p)
    np.testing.assert_allclose(closed, w2_squared(a, a @ p), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rmd_to_projected(a, p), rmd(a, a @ p), rtol=1e-9, atol=1e-12)


def test_rmd_to_projected_with_the_group_projector():
    g = make_unit("matrix").group(c2_swap())
    a = np.random.default_rng(0).standard_normal((6, 4))
    p = g.reynolds()
    np.testing.assert_allclose(rmd_to_projected(a, p), rmd(a, g.project(a)), rtol=1e-10)
    assert rmd_to_projected(g.project(a), p) == 0.0
    np.testing.assert_allclose(rmd_to_projected(a, np.zeros((4, 4))), np.sqrt(0.5))


def test_rmd_to_symmetrized_vanishes_exactly_on_wi_clouds():
    g = make_unit("uv", 3, 3, "tanh").group(symmetric_group(3))
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 6))
    wi = g.symmetrize(a)
    np.testing.assert_allclose(rmd_to_symmetrized(wi, g), 0.0, atol=1e-7)
    r = rmd_to_symmetrized(a, g)
    assert 0.1 < r <= 1.0
    np.testing.assert_allclose(r, rmd(np.repeat(a, g.order, 0), wi), rtol=1e-9)


# ---- invalid input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad,msg",
    [
        (np.zeros(3), r"a must be a non-empty cloud of shape \(n, D\)"),
        (np.zeros((0, 2)), r"a must be a non-empty cloud"),
        (np.array([[np.nan, 0.0]]), "a contains non-finite"),
        # finite, but (2·1e300)² overflows: the solver would see infinite costs
        (np.full((2, 2), -1e300), r"a has a coordinate of size 1e\+300: squared distances "
                                  r"between such points overflow float64 \(allowed: below "
                                  r"4.74e\+153\)"),
    ],
)
def test_bad_clouds_are_named(bad, msg):
    with pytest.raises(ValueError, match=msg):
        w2_squared(bad, np.zeros((1, 2)))


def test_clouds_in_different_spaces_are_refused():
    with pytest.raises(ValueError, match="D=2 vs D=3"):
        rmd(np.zeros((2, 2)), np.zeros((2, 3)))


@pytest.mark.parametrize("fn", [rmd_to_projected, w2_squared_to_projection])
def test_projector_of_wrong_shape_is_named(fn):
    with pytest.raises(ValueError, match=r"projector must have shape \(4, 4\), got \(3, 3\)"):
        fn(np.ones((5, 4)), np.eye(3))


@pytest.mark.parametrize(
    "p", [2 * np.eye(2), np.array([[1.0, 1.0], [0.0, 0.0]])], ids=["not-idempotent", "oblique"]
)
@pytest.mark.parametrize("fn", [rmd_to_projected, w2_squared_to_projection])
def test_non_projector_is_refused(fn, p):
    """The closed form holds only for orthogonal projectors: anything else is an error."""
    with pytest.raises(ValueError, match="not an orthogonal projector"):
        fn(np.ones((3, 2)), p)
