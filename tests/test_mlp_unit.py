"""The multi-layer ``mlp`` unit (PAPER.md §10) and the input VJPs of every unit.

Against independent computations: σ* written from §10 with its own matrix products,
autograd of Σ_s c_s · Φ_N(x_s) in float64, E^G of the C₂ example written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import rotation_group

from mfsym.core.groups import c2_swap, cyclic_group, symmetric_group
from mfsym.core.units import ACTIVATIONS, make_unit

F64 = torch.float64

#: (group on X = Y, hidden width, representation) settings of the mlp unit.
MLP_SETTINGS = {
    "C2-input-h2": (c2_swap, 2, "input"),
    "C2-input-h4": (c2_swap, 4, "input"),
    "C3-regular-h6": (lambda: cyclic_group(3), 6, "regular"),
    "S3-input-h3": (lambda: symmetric_group(3), 3, "input"),
    "R4-regular-h4": (lambda: rotation_group(4), 4, "regular"),
    "R3-trivial-h2": (lambda: rotation_group(3), 2, "trivial"),
}


def mlp(name, act="tanh"):
    make_gxy, hidden, rep = MLP_SETTINGS[name]
    gxy = make_gxy()
    d = gxy.x.shape[1]
    unit = make_unit("mlp", d, d, act, hidden=hidden, representation=rep)
    return unit, unit.group(gxy)


def draw(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def sigma_by_definition(unit, theta, x):
    """σ*(x_s, θ_n) = W₂ act(W₁ x_s) with W₁ (h, dx), W₂ (dy, h) read row-major: (S, N, dy)."""
    h, dx, dy = unit.hidden, unit.dx, unit.dy
    out = torch.empty(x.shape[0], theta.shape[0], dy, dtype=theta.dtype)
    for n in range(theta.shape[0]):
        w1 = theta[n, : h * dx].reshape(h, dx)
        w2 = theta[n, h * dx :].reshape(dy, h)
        out[:, n] = unit.activation.fn(x @ w1.T) @ w2.T
    return out


@pytest.mark.parametrize("name", MLP_SETTINGS)
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
def test_mlp_is_jointly_equivariant(name, act):
    """σ*(g x, M_g z) = g σ*(x, z) for every element, particle and sample."""
    unit, group = mlp(name, act)
    theta, x = draw(1, 5, group.dim_z), 3 * draw(2, 7, group.dim_x)
    base = sigma_by_definition(unit, theta, x)
    for k in range(group.order):
        gx, gy, gz = (torch.tensor(a[k]) for a in (group.x, group.y, group.z))
        moved = sigma_by_definition(unit, theta @ gz.T, x @ gx.T)
        torch.testing.assert_close(moved, base @ gy.T, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(unit.per_particle(theta @ gz.T, x @ gx.T), base @ gy.T,
                                   rtol=1e-12, atol=1e-12)


def test_c2_fixed_space_is_the_spec_example():
    """C₂ swap, h = d = 2, ρ = g: E^G = {W₁ = [[a, b], [b, a]], W₂ = [[c, e], [e, c]]}."""
    _, group = mlp("C2-input-h2")
    assert group.dim_z == 8 and group.dim_fixed == 4
    a, b, c, e = 0.3, -1.2, 0.7, 2.0
    on = np.array([a, b, b, a, c, e, e, c])
    np.testing.assert_allclose(group.project(on[None])[0], on, atol=1e-15)
    off = np.array([1.0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(group.project(off[None])[0], [0.5, 0, 0, 0.5, 0, 0, 0, 0])


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("name", ["C2-input-h4", "C3-regular-h6"])
def test_mlp_pullback_and_input_vjp_equal_autograd(name, act):
    """Closed-form pull-back Σ_s J_n(x_s)ᵀ c_s and input VJP against autograd of
    Σ_s c_s · Φ_N(x_s), Φ_N written from its definition."""
    unit, group = mlp(name, act)
    theta = draw(3, 6, group.dim_z).requires_grad_(True)
    x = (2 * draw(4, 9, group.dim_x)).requires_grad_(True)
    cot = draw(5, 9, group.dim_y)
    n = theta.shape[0]
    out, vjp = unit.output_and_vjp(theta.detach(), x.detach())
    phi = sigma_by_definition(unit, theta, x).mean(1)
    torch.testing.assert_close(out, phi.detach(), rtol=1e-12, atol=1e-12)
    g_theta, g_x = torch.autograd.grad((phi * cot).sum(), (theta, x))
    force, vjp_x = vjp(cot)
    torch.testing.assert_close(force, n * g_theta, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(vjp_x, g_x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(unit.output_and_pullback(theta.detach(), x.detach())[1](cot),
                               force, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["matrix", "uv"])
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "leaky_relu"])
def test_one_layer_input_vjp_equals_autograd(name, act):
    """The input VJP of the matrix and uv units (used by the ResNet) against autograd."""
    unit = make_unit(name, 3, 3, act)
    theta = draw(6, 5, unit.dim_z)
    x = (2 * draw(7, 4, 3)).requires_grad_(True)
    cot = draw(8, 4, 3)
    out, vjp = unit.output_and_vjp(theta, x.detach())
    torch.testing.assert_close(out, unit.output(theta, x.detach()), rtol=1e-12, atol=1e-12)
    (g_x,) = torch.autograd.grad((unit.per_particle(theta, x).mean(-2) * cot).sum(), x)
    force, vjp_x = vjp(cot)
    torch.testing.assert_close(vjp_x, g_x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(force, unit.output_and_pullback(theta, x.detach())[1](cot),
                               rtol=1e-12, atol=1e-12)


def test_bad_mlp_settings_are_named():
    with pytest.raises(ValueError, match=r"unknown mlp representation 'conv'; allowed: "
                       r"\['input', 'regular', 'trivial'\]"):
        make_unit("mlp", 2, 2, representation="conv")
    with pytest.raises(ValueError, match="hidden width must be a positive integer ≤ 4096, got 0"):
        make_unit("mlp", 2, 2, hidden=0)
    with pytest.raises(ValueError, match="hidden width 3 must be a multiple of 2"):
        make_unit("mlp", 2, 2, hidden=3).group(c2_swap())
    with pytest.raises(ValueError, match="'input' needs a permutation action on X; group 'R3'"):
        make_unit("mlp", 2, 2, hidden=2).group(rotation_group(3))
