"""The measurement layer's forward Φ(x) = (1/N) Σᵢ σ*(x, θᵢ) (``equivariance.network``):
the engine's native forward where it builds, the unit's torch forward otherwise, both
against the units' formulas written out in numpy; the native forward's blocks of inputs
change no bit."""

from __future__ import annotations

import numpy as np
import pytest

import mfsym.measure.equivariance as eq
from mfsym.core.units import make_unit


def sigmoid(h):
    return 1.0 / (1.0 + np.exp(-h))


def written_out(name, theta, x, dim):
    """Φ(x) of the unit ``name`` from its formula (numpy, float64), (S, dy)."""
    N = theta.shape[0]
    if name == "matrix":  # σ*(x, z) = sigmoid(z x), z ∈ R^{dim×dim} row-major
        z = theta.reshape(N, dim, dim)
        return sigmoid(np.einsum("nij,sj->sni", z, x)).mean(1)
    if name == "uv":  # σ*(x, (u, v)) = v sigmoid(uᵀx / dim)
        u, v = theta[:, :dim], theta[:, dim:]
        return (sigmoid(x @ u.T / dim)[:, :, None] * v[None]).mean(1)
    raise ValueError(name)


@pytest.mark.parametrize("name", ["matrix", "uv"])
@pytest.mark.parametrize("dim", [2, 3])
def test_the_forward_is_the_units_formula(name, dim):
    unit = make_unit(name, dim, dim, "sigmoid")
    rng = np.random.default_rng(dim)
    theta = rng.standard_normal((37, unit.dim_z))
    x = 4.0 * rng.standard_normal((301, dim))
    assert eq._native_forward(unit) is not None  # a C compiler is part of the setup
    np.testing.assert_allclose(eq.network(unit, theta, x), written_out(name, theta, x, dim),
                               rtol=1e-13, atol=1e-15)


def test_torch_and_native_forwards_agree_and_blocks_change_no_bit(monkeypatch):
    unit = make_unit("uv", 3, 3, "tanh")
    rng = np.random.default_rng(1)
    theta, x = rng.standard_normal((50, unit.dim_z)), rng.standard_normal((1000, 3))
    whole = eq.network(unit, theta, x)
    monkeypatch.setattr(eq, "NATIVE_NUMBERS_MAX", 4 * 3 * 7)  # blocks of 7 inputs
    np.testing.assert_array_equal(eq.network(unit, theta, x), whole)
    monkeypatch.setattr(eq, "_native_forward", lambda unit: None)
    plain = eq.network(unit, theta, x)
    monkeypatch.setattr(eq, "TORCH_NUMBERS_MAX", 50 * 3 * 5)  # blocks of 5 inputs
    # torch's mean over particles may round differently with the batch's shape
    np.testing.assert_allclose(eq.network(unit, theta, x), plain, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(whole, plain, rtol=1e-13, atol=1e-15)
    assert eq.network(unit, theta, x[:0]).shape == (0, 3)


def test_the_group_average_is_the_average_over_the_elements_written_out():
    """(1/|H|) Σ_h h_yᵀ Φ(h_x x) over 12 rotations about the third axis, each term by
    the numpy formula."""
    unit = make_unit("uv", 3, 3, "sigmoid")
    rng = np.random.default_rng(2)
    theta, x = rng.standard_normal((40, 6)), 4.0 * rng.standard_normal((200, 3))
    a = 2 * np.pi * np.arange(12) / 12
    h = np.zeros((12, 3, 3))
    h[:, 0, 0], h[:, 0, 1], h[:, 1, 0], h[:, 1, 1], h[:, 2, 2] = (
        np.cos(a), -np.sin(a), np.sin(a), np.cos(a), 1.0)
    expect = sum(written_out("uv", theta, x @ g.T, 3) @ g for g in h) / 12
    np.testing.assert_allclose(eq.group_average(unit, theta, x, h, h, chunk=5), expect,
                               rtol=1e-13, atol=1e-15)
