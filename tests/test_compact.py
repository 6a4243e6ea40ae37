"""SO(2) and O(2) acting on R³ about the third axis (PAPER.md §11): Haar measure, E^G,
quadrature subgroups, the uv unit's equivariance, and the engine's FA_K and Haar DA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfsym.core.compact import (
    CompactGroup,
    QuadratureGroup,
    RotationXY,
    compact_group,
)
from mfsym.core.groups import GroupError, GroupXY
from mfsym.core.teachers import Teacher
from mfsym.core.units import make_unit
from mfsym.engine.run_inputs import initial_particles, stream_seed
from mfsym.engine.training import RunSpec, TrainConfig, train_stack

F64 = torch.float64
NAMES = ("SO2", "O2")


def uv3():
    return make_unit("uv", 3, 3, "sigmoid")


def group(name):
    return compact_group(uv3(), RotationXY(name, 3))


@pytest.mark.parametrize("name", NAMES)
def test_fixed_subspace_is_the_axis_for_u_and_v(name):
    expected = np.diag([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])  # span{e₃} ⊕ span{e₃}
    g = group(name)
    np.testing.assert_allclose(g.reynolds(), expected, atol=1e-12)
    assert g.dim_fixed == 2
    basis = g.fixed_basis()
    np.testing.assert_allclose(basis @ basis.T, expected, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_haar_average_of_the_representation_is_the_projector(name):
    """∫ M_g dg = P_E: entries of M_g lie in [−1, 1], so the Monte-Carlo error of the
    mean of n draws is at most 1/√n per entry; 5 of those is a 1-in-10⁶ event."""
    g, n = group(name), 200_000
    mats = g.haar_z(n, np.random.default_rng(3))
    err = np.abs(mats.mean(axis=0) - g.reynolds()).max()
    assert err < 5.0 / math.sqrt(n)
    # the second moment of the angle is uniform too: E[cos² φ] = 1/2
    assert abs((mats[:, 0, 0] ** 2).mean() - 0.5) < 5.0 / math.sqrt(n)
    if name == "O2":  # the reflection is a fair coin: det = ±1 equally often
        det = np.linalg.det(mats[:, :3, :3])
        assert abs(det.mean()) < 5.0 / math.sqrt(n)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_quadrature_subgroup_is_closed_and_averages_to_the_projector(name, k):
    g = group(name)
    q = g.quadrature(k)  # FiniteGroup validation: orthogonal, identity, closed, distinct
    assert isinstance(q, QuadratureGroup)
    assert q.order == (2 * k if name == "O2" else k)
    flat = q.z.reshape(q.order, -1)
    for a in q.z:
        for b in q.z:
            assert np.abs(flat - (a @ b).ravel()).max(axis=1).min() < 1e-12
    average = q.z.mean(axis=0)
    if k >= 2:  # the half-turn already fixes exactly the axis
        np.testing.assert_allclose(average, g.reynolds(), atol=1e-12)
    elif name == "SO2":  # C₁ = {I}: no averaging at all
        np.testing.assert_allclose(average, np.eye(6))
    np.testing.assert_allclose(q.reynolds(), g.reynolds())


def test_an_incomplete_rotation_set_is_not_closed():
    mats = RotationXY("SO2", 3).quadrature_xy(4).x[:3]  # C₄ without the 3/4 turn
    with pytest.raises(GroupError, match="not closed"):
        uv3().group(GroupXY("partial", mats, mats.copy()))


def test_a_non_orthogonal_action_is_refused():
    with pytest.raises(GroupError, match="orthogonal"):
        CompactGroup(RotationXY("SO2", 3), lambda gx, gy: 2.0 * np.kron(np.eye(2), gx))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "SO3"}, "allowed"), ({"name": "SO2", "dim": 1}, "dim"),
])
def test_bad_group_parameters_name_the_value(kwargs, match):
    with pytest.raises(GroupError, match=match):
        RotationXY(**kwargs)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_bad_quadrature_size_is_refused(bad):
    with pytest.raises(GroupError, match="K ≥ 1"):
        group("SO2").quadrature(bad)


def test_the_matrix_unit_is_not_rotation_equivariant():
    with pytest.raises(ValueError, match="permutation"):
        compact_group(make_unit("matrix", 3, 3, "sigmoid"), RotationXY("SO2", 3))


@pytest.mark.parametrize("name", NAMES)
def test_uv_unit_is_jointly_equivariant_for_random_rotations(name):
    unit, g = uv3(), group(name)
    rng = np.random.default_rng(0)
    xs = g.xy.haar(20, rng)
    zs = g.z_stack(xs)
    theta = torch.as_tensor(rng.standard_normal((7, 6)))
    x = torch.as_tensor(4.0 * rng.standard_normal((11, 3)))
    for gx, gz in zip(xs, zs, strict=True):
        gx, gz = torch.as_tensor(gx), torch.as_tensor(gz)
        left = unit.per_particle(theta @ gz.T, x @ gx.T)  # σ*(g x, M_g z)
        right = unit.per_particle(theta, x) @ gx.T  # g σ*(x, z)
        torch.testing.assert_close(left, right, rtol=0, atol=1e-12)


def test_torch_elements_match_the_numpy_ones_and_zero_is_the_identity():
    xy = RotationXY("O2", 3)
    params = torch.tensor([[0.0, 0.0], [0.25, 0.7], [0.6, 0.2]], dtype=F64)
    expected = xy.matrices(2 * np.pi * params[:, 0].numpy(), params[:, 1].numpy() >= 0.5)
    np.testing.assert_allclose(xy.torch_matrices(params).numpy(), expected, atol=1e-15)
    assert torch.equal(xy.torch_matrices(torch.zeros(1, 2))[0], torch.eye(3))


def _teacher():
    rng = np.random.default_rng(5)
    return {"arbitrary": Teacher("arbitrary", 0.5 * rng.standard_normal((5, 6)))}


def _cfg(**kw):
    base = dict(dtype="float64", backend="eager", device="cpu", n_eval=64, n_snapshots=2,
                beta=1e-4)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("name", NAMES)
def test_fa_k_keeps_an_si_start_on_eg_for_every_k_from_two(name):
    """FA_K's drift is G_K-equivariant and G_K (K ≥ 2) fixes exactly E^G: an SI start stays
    at rounding.  K = 1 leaves: for SO(2) it is vanilla, whose minibatch drift leaves E^G;
    for O(2) the reflection S alone also fixes e₁."""
    g, n = group(name), 20
    for k in (1, 2, 3, 8):
        q = g.quadrature(k)
        res = train_stack(q, uv3(), _teacher(), [RunSpec("arbitrary", "FA", 0)], n, "SI",
                          _cfg(T=2.0))
        assert res.rmd_projected[0, 0] == 0.0
        final = res.rmd_projected[0, -1]
        if k >= 2:
            assert final < 1e-12, (k, final)
        else:
            assert final > 1e-3, (k, final)


def test_da_step_equals_autograd_with_the_sampled_rotations():
    """One DA step of the engine = θ − (α/N)·N∇[loss(g_b x_b, g_b y_b) + τ(1/N)Σ‖θ‖²]
    + √(2αβ/N) ξ, with the Haar elements g_b replayed from the seed's stream."""
    g, unit, n, seed = group("O2"), uv3(), 6, 3
    q = g.quadrature(4)
    teacher = _teacher()["arbitrary"]
    cfg = _cfg(T=1 / n, tau=0.05, beta=1e-3, rng_chunk=1)
    res = train_stack(q, unit, {"arbitrary": teacher}, [RunSpec("arbitrary", "DA", seed)], n,
                      "WI", cfg)
    gen = torch.Generator().manual_seed(stream_seed(seed, n))
    x = cfg.input_std * torch.randn(1, cfg.batch_size, 3, generator=gen, dtype=F64)[0]
    u = torch.rand(1, cfg.batch_size, 2, generator=gen, dtype=F64)[0]
    xi = torch.randn(1, n, 6, generator=gen, dtype=F64)[0]
    mats = torch.as_tensor(g.xy.matrices(2 * np.pi * u[:, 0].numpy(), u[:, 1].numpy() >= 0.5))
    assert (u[:, 1] >= 0.5).any() and (u[:, 1] < 0.5).any()  # both kinds of element drawn

    def phi(cloud, inputs):  # Φ(x) = mean_n v_n sigmoid(u_nᵀx / 3), written from the spec
        return (torch.sigmoid(inputs @ cloud[:, :3].T / 3)[:, :, None] * cloud[None, :, 3:]
                ).mean(1)

    y = phi(torch.as_tensor(teacher.particles), x)
    theta0 = torch.as_tensor(initial_particles(q, n, seed, "WI"))
    theta = theta0.clone().requires_grad_(True)
    xg, yg = torch.einsum("bij,bj->bi", mats, x), torch.einsum("bij,bj->bi", mats, y)
    loss = ((phi(theta, xg) - yg) ** 2).sum(-1).mean() + cfg.tau * (theta**2).sum() / n
    (grad,) = torch.autograd.grad(loss, theta)
    lr = cfg.alpha / n
    expected = theta0 - lr * n * grad + math.sqrt(2 * lr * cfg.beta) * xi
    np.testing.assert_allclose(res.final_particles[0], expected.numpy(), rtol=1e-10,
                               atol=1e-12)
