"""Deep settings of PAPER.md §10 on the one engine: the mlp ensemble and the mean-ODE ResNet.

* the ResNet map is equivariant (jointly, and for SI particles in x alone);
* one engine step equals θ − α ∇_θ J(θ) with J written from §10 and differentiated by
  autograd in float64 (J = mean_b ‖Φ(x_b) − y_b‖² + (τ/N) Σ‖θ‖², N = L·M);
* an SI start stays on E^G to rounding under EA, FA and orbit-DA, while vanilla leaves it;
* the same seeds give the same bits; a checkpointed ResNet run resumes to the same result;
* a backend without fused kernels for the model falls back to eager with a note.
  (The native ResNet kernels are checked against eager in test_deep_native.py.)
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mfsym.core.groups import c2_swap, cyclic_group
from mfsym.core.teachers import paper_teachers, random_teacher
from mfsym.core.units import make_unit
from mfsym.engine.blocks import Block
from mfsym.engine.kernels import EagerKernel, Tally, UpdateSpec, select_kernel
from mfsym.engine.models import ResNet, repeat_layers
from mfsym.engine.training import RunSpec, TrainConfig, train_stack

F64 = torch.float64


def draw(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def sigma_ref(unit, z, h):
    """σ*(h_s, z_i) from §2/§10 with plain matrix products: (S, M, d)."""
    d = unit.dx
    if unit.name == "matrix":
        mats = z.reshape(-1, d, d)
        return unit.activation.fn(torch.einsum("mkl,sl->smk", mats, h))
    k = unit.hidden * d
    w1, w2 = z[:, :k].reshape(-1, unit.hidden, d), z[:, k:].reshape(-1, d, unit.hidden)
    return torch.einsum("mkh,smh->smk", w2, unit.activation.fn(torch.einsum("mhl,sl->smh", w1, h)))


def resnet_ref(unit, depth, theta, x):
    """h_l = h_{l−1} + (1/(L·M)) Σ_i σ*(h_{l−1}, z_{l,i}), Φ = h_L, layer-major particles."""
    m = theta.shape[0] // depth
    h = x
    for layer in range(depth):
        z = theta[layer * m : (layer + 1) * m]
        h = h + sigma_ref(unit, z, h).sum(1) / (depth * m)
    return h


def settings():
    """(label, model, group) for the ResNet of the matrix unit and of the mlp unit, and the
    mlp ensemble (depth 1: no ResNet)."""
    mat = make_unit("matrix", 2, 2, "sigmoid")
    mlp2 = make_unit("mlp", 2, 2, "tanh", hidden=4)
    mlp3 = make_unit("mlp", 3, 3, "tanh", hidden=3, representation="regular")
    return [
        ("resnet3-matrix-C2", ResNet(mat, 3), mat.group(c2_swap())),
        ("resnet2-mlp-C2", ResNet(mlp2, 2), mlp2.group(c2_swap())),
        ("resnet2-mlp-C3", ResNet(mlp3, 2), mlp3.group(cyclic_group(3))),
    ]


SETTINGS = {s[0]: s for s in settings()}


@pytest.mark.parametrize("label", SETTINGS)
def test_resnet_map_is_equivariant(label):
    """Φ(g x; M_g θ) = g Φ(x; θ) for any particles, and Φ(g x; θ) = g Φ(x; θ) for SI ones."""
    _, model, group = SETTINGS[label]
    theta = 0.8 * draw(1, model.depth * 5, group.dim_z)
    si = theta @ torch.tensor(group.reynolds())
    x = 3 * draw(2, 7, group.dim_x)
    base, base_si = model.output(theta, x), model.output(si, x)
    torch.testing.assert_close(base, resnet_ref(model.unit, model.depth, theta, x),
                               rtol=1e-12, atol=1e-12)
    for k in range(group.order):
        gx, gy, gz = (torch.tensor(a[k]) for a in (group.x, group.y, group.z))
        torch.testing.assert_close(model.output(theta @ gz.T, x @ gx.T), base @ gy.T,
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model.output(si, x @ gx.T), base_si @ gy.T,
                                   rtol=1e-12, atol=1e-12)


def vanilla_spec(n, alpha=50.0, tau=1e-4):
    return UpdateSpec(
        lr=alpha / n, wd=2 * tau, sigma=0.0, proj=None, proj_on=torch.tensor([False]),
        noise_proj=None, noise_on=torch.tensor([False]), noise_row=torch.tensor([0]),
        views=1, c0=2.0 / 9,
    )


@pytest.mark.parametrize("label", [*SETTINGS, "mlp-ensemble"])
def test_engine_step_equals_autograd_of_the_loss(label):
    """θ' = θ − (α/N)[F + 2τθ] with F = N ∇ loss equals θ − α ∇_θ J(θ) (autograd, float64)."""
    if label == "mlp-ensemble":
        unit = make_unit("mlp", 2, 2, "sigmoid", hidden=4)
        model, depth = unit, 1

        def phi(th, x):  # Φ_N(x) = (1/N) Σ_i σ*(x, θ_i)
            return sigma_ref(unit, th, x).mean(1)
    else:
        _, model, _ = SETTINGS[label]
        unit, depth = model.unit, model.depth

        def phi(th, x):
            return resnet_ref(unit, depth, th, x)
    n, alpha, tau = depth * 6, 50.0, 1e-4
    theta = 0.7 * draw(3, 1, n, unit.dim_z)
    x, y = 3 * draw(4, 1, 9, unit.dx), draw(5, 1, 9, unit.dy)
    tally = Tally(torch.zeros(1, dtype=F64), torch.full((1,), -1))
    new = EagerKernel(model).advance(theta, x, y, torch.zeros(1, n, unit.dim_z),
                                     vanilla_spec(n, alpha, tau), tally)
    th = theta[0].clone().requires_grad_(True)
    out = phi(th, x[0])
    loss = ((out - y[0]) ** 2).sum(-1).mean()
    total = loss + tau / n * (th**2).sum()
    (grad,) = torch.autograd.grad(total, th)
    torch.testing.assert_close(new[0], theta[0] - alpha * grad, rtol=1e-10, atol=1e-12)
    assert tally.loss_acc.item() == pytest.approx(loss.item(), rel=1e-12)


def deep_setup(depth, kind="WI"):
    """C₂ matrix unit (paper teachers) repeated at every layer, or the mlp ensemble."""
    if depth == 0:
        unit = make_unit("mlp", 2, 2, "sigmoid", hidden=2)
        group = unit.group(c2_swap())
        rng = np.random.default_rng(0)
        teachers = {k: random_teacher(group, k, 3, rng) for k in ("arbitrary", "WI", "SI")}
        return unit, group, teachers
    unit = make_unit("matrix", 2, 2, "sigmoid")
    group = unit.group(c2_swap())
    teachers = {k: type(t)(k, repeat_layers(t.particles, depth))
                for k, t in paper_teachers(group).items()}
    return ResNet(unit, depth), group, teachers


def short_cfg(**kw):
    base = {"T": 2.0, "alpha": 10.0, "dtype": "float64", "n_eval": 64, "n_snapshots": 4,
            "rng_chunk": 8, "device": "cpu"}
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("depth", [0, 2], ids=["mlp-ensemble", "resnet2-matrix"])
def test_si_start_stays_on_eg_under_ea_fa_orbit_da(depth):
    """EA, FA, orbit-averaged DA keep an SI start on E^G to rounding; vanilla leaves it."""
    model, group, teachers = deep_setup(depth)
    n = 8
    runs = [RunSpec(t, s, 0) for t in ("WI", "arbitrary") for s in ("EA", "FA", "DA")]
    res = train_stack(group, model, teachers, runs, n, "SI", short_cfg(da_mode="orbit"))
    assert res.rmd_projected.max() < 1e-12, res.rmd_projected.max(axis=1)
    assert res.dist_fixed.max() < 1e-12
    free = train_stack(group, model, teachers, [RunSpec("WI", "vanilla", 0)], n, "SI",
                       short_cfg())
    assert free.rmd_projected[0, -1] > 1e-6


@pytest.mark.parametrize("depth", [0, 2], ids=["mlp-ensemble", "resnet2-matrix"])
def test_same_seed_same_result_and_resume(depth, tmp_path, monkeypatch, caplog):
    """Two trainings from the same seeds give the same bits; an interrupted checkpointed
    one resumes to the same bits."""
    model, group, teachers = deep_setup(depth)
    runs = [RunSpec("SI", "vanilla", 3), RunSpec("arbitrary", "FA", 4)]
    cfg = short_cfg(checkpoint_every=8)
    a = train_stack(group, model, teachers, runs, 6, "SI", cfg)
    b = train_stack(group, model, teachers, runs, 6, "SI", cfg)
    other = train_stack(group, model, teachers, [RunSpec("SI", "vanilla", 5), runs[1]], 6,
                        "SI", cfg)
    assert not np.array_equal(other.final_particles[0], a.final_particles[0])
    np.testing.assert_array_equal(a.final_particles, b.final_particles)
    np.testing.assert_array_equal(a.population_risk, b.population_risk)
    ck = tmp_path / "deep.ckpt.npz"
    original = Block.steps

    def stop(self, prepared, j0, j1, xi_all, step0, gate=None):
        if step0 + (j1 - j0) > 9:
            raise KeyboardInterrupt
        return original(self, prepared, j0, j1, xi_all, step0, gate)

    with monkeypatch.context() as m:
        m.setattr(Block, "steps", stop)
        with pytest.raises(KeyboardInterrupt):
            train_stack(group, model, teachers, runs, 6, "SI", cfg, checkpoint_path=ck)
    with caplog.at_level(logging.INFO, logger="mfsym"):
        c = train_stack(group, model, teachers, runs, 6, "SI", cfg, checkpoint_path=ck)
    assert "resumed at step 8" in caplog.text
    np.testing.assert_array_equal(c.final_particles, a.final_particles)


@pytest.mark.parametrize("backend", ["auto", "native", "compile"])
def test_models_without_fused_kernels_fall_back_to_eager(backend, caplog):
    """The ResNet has native kernels only (of the matrix and mlp units): compile falls back
    for it, and every backend for the ResNet of the uv unit."""
    model, group, teachers = deep_setup(2)
    if backend != "compile":
        uv = make_unit("uv", 2, 2, "sigmoid")
        model, group = ResNet(uv, 2), uv.group(c2_swap())
    with caplog.at_level(logging.WARNING, logger="mfsym"):
        kern = select_kernel(model, backend, torch.device("cpu"), F64)
    assert type(kern) is EagerKernel
    assert "no fused kernel for the resnet model" in caplog.text
    res = train_stack(group, model, teachers, [RunSpec("SI", "EA", 0)], 4, "SI",
                      short_cfg(backend=backend, T=1.0))
    assert res.backend.startswith("eager (backend") and "no fused kernel" in res.backend


def test_resnet_refuses_bad_sizes():
    model, group, teachers = deep_setup(2)
    with pytest.raises(ValueError, match="depth L=2 needs a particle count divisible by L, got 5"):
        train_stack(group, model, teachers, [RunSpec("SI", "EA", 0)], 5, "SI", short_cfg())
    odd = {"SI": type(teachers["SI"])("SI", teachers["SI"].particles[:5])}
    with pytest.raises(ValueError, match="teacher 'SI' has 5 particles, not a multiple"):
        train_stack(group, model, odd, [RunSpec("SI", "EA", 0)], 4, "SI", short_cfg())
    with pytest.raises(ValueError, match="ResNet depth must be an integer ≥ 1, got 0"):
        ResNet(model.unit, 0)
    with pytest.raises(ValueError, match=r"needs a unit mapping R\^d → R\^d"):
        ResNet(make_unit("uv", 2, 3), 2)
