"""Units σ*(x, z): joint equivariance, closed-form pull-backs against autograd, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_setting, rotation_group
from hypothesis import given
from hypothesis import strategies as st

from mfsym.core.groups import c2_swap, cyclic_group, symmetric_group
from mfsym.core.units import ACTIVATIONS, UNITS, make_activation, make_unit

F64 = torch.float64

#: Every (group on X and Y, unit, activation) combination that must be equivariant.
GROUPS_XY = {"C2": c2_swap, "C3": lambda: cyclic_group(3), "S3": lambda: symmetric_group(3)}
EQUIVARIANT = (
    [(g, u, a) for g in GROUPS_XY for u in UNITS for a in ACTIVATIONS]
    + [("R3", "uv", a) for a in ACTIVATIONS]
    + [("R3", "matrix", "linear")]
)


def setting(gname: str, unit: str, act: str):
    gxy = rotation_group(3) if gname == "R3" else GROUPS_XY[gname]()
    return make_setting(gxy, unit, act)


def reference_sigma(unit_name: str, act_name: str, theta, x, dx: int, dy: int, slope=0.1):
    """σ*(x_s, θ_n) written from PAPER.md §2, shape (..., S, N, dy), for autograd."""
    fn = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": lambda h: torch.clamp(h, min=0),
        "leaky_relu": lambda h: torch.where(h > 0, h, slope * h),
        "linear": lambda h: h,
    }[act_name]
    if unit_name == "matrix":
        z = theta.reshape(*theta.shape[:-1], dy, dx)  # (..., N, dy, dx)
        pre = (z.unsqueeze(-4) * x[..., :, None, None, :]).sum(-1)  # (..., S, N, dy)
        return fn(pre)
    u, v = theta[..., :dx], theta[..., dx:]
    h = (u.unsqueeze(-3) * x.unsqueeze(-2)).sum(-1) / dx  # (..., S, N)
    return fn(h).unsqueeze(-1) * v.unsqueeze(-3)


def draw(seed: int, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---- joint equivariance ----------------------------------------------------------------------
@pytest.mark.parametrize("gname,unit,act", EQUIVARIANT, ids=["-".join(c) for c in EQUIVARIANT])
def test_unit_is_jointly_equivariant(gname, unit, act):
    """σ*(g x, M_g z) = g σ*(x, z) for every g, particle and sample."""
    s = setting(gname, unit, act)
    g = s.group
    theta, x = draw(1, 7, g.dim_z), 3 * draw(2, 11, g.dim_x)
    base = s.unit.per_particle(theta, x)  # (S, N, dy)
    for k in range(g.order):
        mz, gx, gy = (torch.tensor(m, dtype=F64) for m in (g.z[k], g.x[k], g.y[k]))
        moved = s.unit.per_particle(theta @ mz.T, x @ gx.T)
        torch.testing.assert_close(moved, base @ gy.T, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            s.unit.output(theta @ mz.T, x @ gx.T),
            s.unit.output(theta, x) @ gy.T,
            rtol=1e-12,
            atol=1e-12,
        )


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6), scale=st.floats(0.1, 5.0))
def test_s3_uv_network_is_equivariant_for_random_clouds(s3_uv, seed, n, scale):
    g, unit = s3_uv.group, s3_uv.unit
    theta, x = scale * draw(seed, n, g.dim_z), draw(seed + 1, 4, g.dim_x)
    for k in range(g.order):
        mz, gx, gy = (torch.tensor(m, dtype=F64) for m in (g.z[k], g.x[k], g.y[k]))
        torch.testing.assert_close(
            unit.output(theta @ mz.T, x @ gx.T),
            unit.output(theta, x) @ gy.T,
            rtol=1e-12,
            atol=1e-12,
        )


def test_sigmoid_matrix_unit_is_not_equivariant_for_a_rotation_of_x_alone(c2_matrix):
    """Control: acting on x without the matching M_g changes the output."""
    unit = c2_matrix.unit
    theta, x = draw(3, 5, 4), draw(4, 6, 2)
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    diff = unit.per_particle(theta, x @ swap.T) - unit.per_particle(theta, x) @ swap.T
    assert diff.abs().max() > 1e-2


# ---- closed-form pull-back vs autograd --------------------------------------------------------
ALL_UNITS = [(u, a) for u in UNITS for a in ACTIVATIONS]


@pytest.mark.parametrize("unit_name,act", ALL_UNITS, ids=["-".join(c) for c in ALL_UNITS])
@pytest.mark.parametrize("dx,dy", [(2, 2), (3, 2)])
def test_pullback_equals_autograd_vjp(unit_name, act, dx, dy):
    """pullback(c)_n = Σ_s J_n(x_s)ᵀ c_s, compared with torch.autograd on the formula."""
    unit = make_unit(unit_name, dx, dy, act)
    runs, n, s = 3, 5, 8
    theta = draw(5, runs, n, unit.dim_z).requires_grad_(True)
    x, cot = 2 * draw(6, runs, s, dx), draw(7, runs, s, dy)
    ref = reference_sigma(unit_name, act, theta, x, dx, dy)
    (grad,) = torch.autograd.grad((ref * cot.unsqueeze(-2)).sum(), theta)

    out, pullback = unit.output_and_pullback(theta.detach(), x)
    torch.testing.assert_close(out, ref.mean(-2).detach(), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(pullback(cot), grad, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(unit.per_particle(theta.detach(), x), ref.detach())
    torch.testing.assert_close(unit.output(theta.detach(), x), ref.mean(-2).detach(),
                               rtol=1e-13, atol=1e-14)


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5), s=st.integers(1, 5))
def test_c2_matrix_pullback_matches_autograd_for_random_shapes(c2_matrix, seed, n, s):
    unit = c2_matrix.unit
    theta = draw(seed, n, 4).requires_grad_(True)
    x, cot = 4 * draw(seed + 1, s, 2), draw(seed + 2, s, 2)
    # the reference is the formula of PAPER.md §2 (not the unit's own forward pass)
    ref = reference_sigma("matrix", "sigmoid", theta, x, 2, 2).mean(-2)
    (grad,) = torch.autograd.grad((ref * cot).sum(), theta)
    out, pullback = unit.output_and_pullback(theta.detach(), x)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-13, atol=1e-14)
    # output is the mean over N particles, so its VJP carries a factor 1/N
    torch.testing.assert_close(pullback(cot) / n, grad, rtol=1e-12, atol=1e-14)


# ---- activations -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivative_and_homogeneity(name):
    act = make_activation(name, leaky_slope=0.3)
    h = draw(8, 50).requires_grad_(True)
    a = act.fn(h)
    (ref,) = torch.autograd.grad(a.sum(), h)
    torch.testing.assert_close(act.grad(h.detach(), a.detach()), ref, rtol=0, atol=1e-15)
    assert act.grad(h.detach(), a.detach()).dtype == F64
    c = 2.5
    homogeneous = torch.allclose(act.fn(c * h.detach()), c * a.detach(), rtol=1e-14, atol=0)
    assert homogeneous == act.homogeneous


def test_leaky_relu_slope_is_exact_in_float64():
    act = make_activation("leaky_relu", leaky_slope=0.1)
    h = torch.tensor([-2.0, 3.0], dtype=F64)
    assert act.grad(h, act.fn(h)).tolist() == [0.1, 1.0]


# ---- group construction from a unit ----------------------------------------------------------
def test_matrix_z_action_is_kronecker_of_y_and_x(c3_matrix):
    g = c3_matrix.group
    for k in range(g.order):
        np.testing.assert_array_equal(g.z[k], np.kron(g.y[k], g.x[k]))


def test_uv_z_action_is_block_diagonal(s3_uv):
    g = s3_uv.group
    for k in range(g.order):
        np.testing.assert_array_equal(g.z[k][:3, :3], g.x[k])
        np.testing.assert_array_equal(g.z[k][3:, 3:], g.y[k])
        assert not g.z[k][:3, 3:].any() and not g.z[k][3:, :3].any()


# ---- invalid input ---------------------------------------------------------------------------
def test_unknown_unit_and_activation_are_named():
    allowed = r"allowed: \['matrix', 'uv', 'mlp'\]"
    with pytest.raises(ValueError, match=r"unknown unit 'conv'; " + allowed):
        make_unit("conv")
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'; allowed: \['sigmoid'"):
        make_unit("matrix", activation="gelu")


@pytest.mark.parametrize("key,value", [("dx", 0), ("dy", -2), ("dx", 1.5), ("dx", 4097),
                                       ("dy", float("inf")), ("dx", "2")])
def test_bad_dimensions_are_named(key, value):
    with pytest.raises(ValueError, match=f"{key} must be a positive integer ≤ 4096, got {value!r}"):
        make_unit("uv", **{key: value})


@pytest.mark.parametrize("slope", [0.0, -0.1])
def test_leaky_slope_must_be_positive(slope):
    with pytest.raises(ValueError, match=f"leaky_slope must be > 0, got {slope}"):
        make_activation("leaky_relu", slope)


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "leaky_relu"])
def test_matrix_unit_refuses_non_permutation_y_action(act):
    with pytest.raises(ValueError,
                       match=r"equivariant only when G acts on Y by .*element \d+ of group .R3."):
        make_unit("matrix", 2, 2, act).group(rotation_group(3))


def test_group_dimensions_must_match_the_unit():
    with pytest.raises(ValueError, match=r"acts on R\^3 → R\^3, but the uv unit maps R\^2"):
        make_unit("uv", 2, 2).group(symmetric_group(3))


@pytest.mark.parametrize("unit_name", UNITS)
def test_wrong_particle_and_input_shapes_are_named(unit_name):
    unit = make_unit(unit_name, 2, 2, "tanh")
    with pytest.raises(ValueError, match="particles of size D=4 in the last axis, got shape"):
        unit.output(torch.zeros(5, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"inputs of size dx=2 in the last axis, got shape \(4, 3"):
        unit.output(torch.zeros(5, 4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"expects particles \(\.\.\., N, D\)"):
        unit.per_particle(torch.zeros(4), torch.zeros(4, 2))
