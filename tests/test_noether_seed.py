"""The rest of the Noether seed (PAPER.md §9b) as exact checks of the engine.

Balanced layers, angular momentum and the tangent kernel: every identity is compared with an
independent computation (autograd on a hand-written loss, finite differences along the
group orbit, the kernel written out by hand), never with the code path that produced it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mfsym.core.compact import RotationXY, compact_group
from mfsym.core.groups import c2_swap
from mfsym.core.teachers import Teacher
from mfsym.core.units import make_unit
from mfsym.engine.models import OutputScaled
from mfsym.engine.training import RunSpec, TrainConfig, train_stack
from mfsym.figures.noether import noether_figure_job
from mfsym.measure.balance import (
    layer_balance,
    neuron_balance,
    resnet_balance,
    resnet_layer_maps,
)
from mfsym.measure.momentum import angular_momentum, loss_gradient, uv_generator
from mfsym.measure.tangent import energy_rate, tangent_kernel
from mfsym.paper.seed_numbers import seed_macros
from mfsym.paper.tex import format_number
from mfsym.records.results import write_dataset
from mfsym.studies import balance as bal
from mfsym.studies.momentum import orbit_inputs
from mfsym.studies.noether import NoetherConfig, run_study
from mfsym.studies.noether_base import TEACHER, training_inputs
from mfsym.studies.tangent import antisymmetric_pairs

F64 = torch.float64
HOMOGENEOUS = ("relu", "leaky_relu", "linear")
TORCH_ACT = {"relu": torch.relu, "leaky_relu": lambda h: torch.nn.functional.leaky_relu(h, 0.1),
             "linear": lambda h: h, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def t64(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=F64)


def teacher_outputs(problem) -> np.ndarray:
    with torch.no_grad():
        return problem.unit.per_particle(t64(problem.teachers[TEACHER].particles),
                                         t64(problem.x_train)).mean(-2).numpy()


# ---------------------------------------------------------------------------------------
# balanced layers: the mlp unit
# ---------------------------------------------------------------------------------------
def mlp_reference_force(theta, x, y, activation, hidden):
    """N ∇L for ``L = mean_s ‖(1/N) Σ W₂ act(W₁ x_s) − y_s‖²``, by autograd on a hand
    formula (independent of the unit's pull-back): (N, D)."""
    th = t64(theta).requires_grad_(True)
    n, d = th.shape[0], x.shape[1]
    w1 = th[:, : hidden * d].reshape(n, hidden, d)
    w2 = th[:, hidden * d:].reshape(n, -1, hidden)
    hid = TORCH_ACT[activation](torch.einsum("nhl,sl->snh", w1, t64(x)))
    out = torch.einsum("nkh,snh->sk", w2, hid) / n
    loss = ((out - t64(y)) ** 2).sum(-1).mean()
    (g,) = torch.autograd.grad(loss, th)
    return n * g.numpy()


def mlp_problem(activation, hidden=4):
    common = NoetherConfig.from_dict({}).common
    b = bal.BalanceSetting(hidden=hidden)
    return bal._mlp_problem(common, b, activation, training_inputs(common, 2)), hidden


@pytest.mark.parametrize("activation", (*HOMOGENEOUS, "tanh"))
def test_mlp_one_step_balance_is_the_closed_form(activation):
    """C(θ1) = (1 − ηλ)² C(θ0) + η² (G₁G₁ᵀ − G₂ᵀG₂), G from autograd, to rounding where the
    rescaling is a symmetry (diagonal for relu/leaky, whole matrix for linear)."""
    problem, h = mlp_problem(activation)
    eta, lam = 0.05, 0.5
    th0, th1 = bal._one_step(problem, eta, lam, threads=1)
    g = mlp_reference_force(th0, problem.x_train, teacher_outputs(problem), activation, h)
    np.testing.assert_allclose(th1, th0 - eta * (g + lam * th0), rtol=1e-12, atol=1e-12)
    w1g, w2g = g[:, : 2 * h].reshape(-1, h, 2), g[:, 2 * h:].reshape(-1, 2, h)
    kick = w1g @ w1g.transpose(0, 2, 1) - w2g.transpose(0, 2, 1) @ w2g
    pred = (1 - eta * lam) ** 2 * layer_balance(th0, h, 2, 2) + eta**2 * kick
    actual = layer_balance(th1, h, 2, 2)
    diag = np.diagonal
    scale = np.abs(layer_balance(th0, h, 2, 2)).max()
    err_diag = np.abs(diag(actual, 0, 1, 2) - diag(pred, 0, 1, 2)).max() / scale
    err_full = np.abs(actual - pred).max() / scale
    if activation == "tanh":
        assert err_diag > 1e-3  # the cross term survives: the control fails
    else:
        assert err_diag < 1e-13
        assert (err_full < 1e-13) == (activation == "linear")


def test_neuron_balance_by_hand_and_rescaling():
    rng = np.random.default_rng(0)
    theta = rng.standard_normal((3, 4 * 2 + 2 * 4))
    w1, w2 = theta[:, :8].reshape(3, 4, 2), theta[:, 8:].reshape(3, 2, 4)
    hand = np.array([[w1[i, k] @ w1[i, k] - w2[i, :, k] @ w2[i, :, k] for k in range(4)]
                     for i in range(3)])
    np.testing.assert_allclose(neuron_balance(theta, 4, 2, 2), hand, rtol=1e-14)
    np.testing.assert_allclose(np.diagonal(layer_balance(theta, 4, 2, 2), 0, 1, 2), hand,
                               rtol=1e-14)


# ---------------------------------------------------------------------------------------
# balanced layers: the linear mean-ODE ResNet
# ---------------------------------------------------------------------------------------
def test_resnet_balance_one_step_is_gradient_descent_on_the_layer_maps():
    """The engine's step of the linear ResNet moves W_l = I + Z̄_l/L by −(η/L) ∂L/∂W_l for the
    loss of the product W_L⋯W_1 (autograd), so D_l changes by (η/L)²(G_lG_lᵀ − G_{l+1}ᵀG_{l+1})."""
    common = NoetherConfig.from_dict({}).common
    b = bal.BalanceSetting(resnet_depth=3, resnet_per_layer=4)
    problem = bal._resnet_problem(common, b, training_inputs(common, 2))
    eta, depth = 0.04, 3
    th0, th1 = bal._one_step(problem, eta, threads=1)
    w = t64(resnet_layer_maps(th0, depth, 2)).requires_grad_(True)
    tw = problem.teachers[TEACHER].particles.reshape(depth, -1, 2, 2).mean(1) / depth + np.eye(2)
    y_np = problem.x_train.T
    for layer in range(depth):
        y_np = tw[layer] @ y_np
    x, y = t64(problem.x_train), t64(y_np.T)
    out = x.T
    for layer in range(depth):
        out = w[layer] @ out
    loss = ((out.T - y) ** 2).sum(-1).mean()
    (g,) = torch.autograd.grad(loss, w)
    g = g.numpy()
    np.testing.assert_allclose(resnet_layer_maps(th1, depth, 2),
                               w.detach().numpy() - eta / depth * g, rtol=1e-12, atol=1e-14)
    c = eta / depth
    kick = c**2 * (g[:-1] @ g[:-1].transpose(0, 2, 1) - g[1:].transpose(0, 2, 1) @ g[1:])
    d0, d1 = resnet_balance(th0, depth, 2), resnet_balance(th1, depth, 2)
    assert np.abs(d1 - d0 - kick).max() < 1e-14 * max(1.0, np.abs(d0).max())
    assert np.abs(d1 - d0).max() > 1e3 * 1e-14  # the step did move the layers


@pytest.fixture(scope="module")
def balance_ds():
    cfg = NoetherConfig.from_dict({"balance": {"etas": [0.04, 0.02, 0.01], "flow_time": 0.5,
                                               "run_eta": 0.0025, "n_snapshots": 6}})
    return run_study("balance", cfg, threads=1)[0]


def test_balance_study_slopes(balance_ds):
    """One-step change O(η²) where the balance holds, O(η) for tanh and the raw-mean
    control; in-layer deviations of the linear ResNet unchanged to rounding."""
    slopes = balance_ds.step_change_slope
    for act in HOMOGENEOUS:
        assert abs(float(slopes.sel(activation=act)) - 2.0) < 0.02
    assert abs(float(slopes.sel(activation="tanh")) - 1.0) < 0.3
    assert abs(float(balance_ds.resnet_step_change_slope) - 2.0) < 0.02
    assert float(balance_ds.resnet_mean_balance_slope) < 1.5
    assert float(balance_ds.resnet_deviation_change.max()) < 1e-14
    assert float(balance_ds.resnet_identity_error.max()) < 1e-13
    errors = balance_ds.identity_error
    assert float(errors.sel(activation=list(HOMOGENEOUS)).max()) < 1e-13
    assert float(errors.sel(activation="tanh")) > 1e-3
    drift = balance_ds.balance_drift.isel(time=-1)
    assert float(drift.sel(activation="tanh")) > 10 * float(drift.sel(activation="relu"))


# ---------------------------------------------------------------------------------------
# angular momentum
# ---------------------------------------------------------------------------------------
def so2_setting(activation="sigmoid"):
    unit = make_unit("uv", 3, 3, activation)
    return unit, compact_group(unit, RotationXY("SO2", 3))


def rotated_loss(theta, x, y, unit, phi):
    """L(e^{φA} θ) with the rotation written out (not through the generator)."""
    c, s = np.cos(phi), np.sin(phi)
    g = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    rot = np.asarray(theta) @ np.kron(np.eye(2), g).T
    with torch.no_grad():
        out = unit.per_particle(t64(rot), t64(x)).mean(-2).numpy()
    return ((out - y) ** 2).sum(-1).mean()


def test_angular_momentum_is_the_derivative_along_the_orbit():
    unit, _ = so2_setting()
    rng = np.random.default_rng(1)
    theta, x, y = rng.standard_normal((7, 6)), 3 * rng.standard_normal((5, 3)), \
        rng.standard_normal((5, 3))
    _, grad = loss_gradient(theta, x, y, unit)
    j, scale = angular_momentum(theta, grad, uv_generator(unit))
    h = 1e-5
    fd = (rotated_loss(theta, x, y, unit, h) - rotated_loss(theta, x, y, unit, -h)) / (2 * h)
    assert abs(j - fd) < 1e-8 * max(1.0, abs(fd))
    assert abs(j) > 1e-4 and abs(j) <= scale


def test_angular_momentum_vanishes_for_an_exactly_invariant_loss():
    """Linear units: the loss is quadratic in x, so the C_3 orbit average is exactly SO(2)-
    invariant and J = 0 to rounding, while the raw set has J ≠ 0."""
    unit, compact = so2_setting("linear")
    rng = np.random.default_rng(2)
    theta, x = rng.standard_normal((9, 6)), 3 * rng.standard_normal((4, 3))
    teacher = compact.reynolds() @ rng.standard_normal((6, 3))
    for points, small in ((1, False), (3, True)):
        xs = orbit_inputs(compact, x, points)
        with torch.no_grad():
            y = unit.per_particle(t64(teacher.T), t64(xs)).mean(-2).numpy()
        _, grad = loss_gradient(theta, xs, y, unit)
        j, scale = angular_momentum(theta, grad, uv_generator(unit))
        assert (abs(j) / scale < 1e-14) == small, (points, j / scale)


@pytest.fixture(scope="module")
def momentum_ds():
    cfg = NoetherConfig.from_dict({"momentum": {"orbit_points": [1, 2, 8, 64],
                                                "population_points": 128, "shown_points": 8,
                                                "flow_time": 0.5, "n_snapshots": 6}})
    return run_study("momentum", cfg, threads=1)[0]


def test_angular_momentum_of_augmented_training(momentum_ds):
    rel = momentum_ds.j_rel_max
    assert float(rel.sel(K=1)) > 1e-3  # raw set
    assert float(momentum_ds.j_rel_raw_max) == float(rel.sel(K=1))
    assert float(rel.sel(K=64)) < 1e-12
    assert float(rel.sel(K=1)) > float(rel.sel(K=8)) > float(rel.sel(K=64))
    assert float(momentum_ds.j_rel_population_max) < 1e-14
    assert momentum_ds.attrs["precision"].startswith("float64")


# ---------------------------------------------------------------------------------------
# the tangent kernel
# ---------------------------------------------------------------------------------------
def test_tangent_kernel_by_hand_for_the_uv_unit():
    """K = (1/N) Σ [a_s a_t I + (a'_s a'_t x_s·x_t / d²) v vᵀ], a = act(uᵀx/d)."""
    unit = make_unit("uv", 2, 2, "tanh")
    rng = np.random.default_rng(3)
    theta, x = rng.standard_normal((5, 4)), rng.standard_normal((3, 2))
    u, v = theta[:, :2], theta[:, 2:]
    a = np.tanh(x @ u.T / 2)  # (S, N)
    da = 1 - a**2
    hand = (np.einsum("sn,tn->st", a, a)[:, None, :, None] * np.eye(2)[None, :, None, :]
            + np.einsum("sn,tn,st,nk,nl->sktl", da, da, x @ x.T / 4, v, v)) / 5
    np.testing.assert_allclose(tangent_kernel(theta, x, unit), hand, rtol=1e-13, atol=1e-15)


def test_energy_rate_is_the_engine_force_norm():
    """(4/n²) rᵀ K r = (1/N) Σ ‖F_i‖² with F the unit's own closed-form pull-back."""
    unit = make_unit("uv", 2, 2, "sigmoid")
    rng = np.random.default_rng(4)
    theta, x, y = rng.standard_normal((6, 4)), rng.standard_normal((5, 2)), \
        rng.standard_normal((5, 2))
    out, pullback = unit.output_and_pullback(t64(theta), t64(x))
    force = pullback(2 * (out - t64(y)) / 5).numpy()
    _, rate = energy_rate(theta, x, y, unit)
    assert abs(rate - (force**2).sum() / 6) < 1e-13 * rate


def test_ntk_model_step_is_plain_gradient_descent():
    """The engine with OutputScaled(c = √N) and α = η does θ ← θ − η ∇L for
    f = (1/√N) Σ σ*, the gradient by autograd."""
    common = NoetherConfig.from_dict({}).common
    unit = make_unit("uv", 2, 2, "sigmoid")
    group = unit.group(c2_swap())
    n, eta = 8, 0.3
    rng = np.random.default_rng(5)
    start = antisymmetric_pairs(0.5 * rng.standard_normal((n, 4)), 2)
    teacher = {TEACHER: Teacher(TEACHER, rng.standard_normal((3, 4)))}
    x = training_inputs(common, 2)
    cfg = TrainConfig(alpha=eta, T=1.0 / n, tau=0.0, beta=0.0, n_snapshots=2,
                      dtype="float64", backend="eager", n_eval=16)
    res = train_stack(group, OutputScaled(unit, np.sqrt(n)), teacher, [RunSpec(TEACHER,
                      "vanilla", 0)], n, "WI", cfg, init_particles={0: start}, x_train=x)
    th = t64(start).requires_grad_(True)
    with torch.no_grad():
        y = unit.per_particle(t64(teacher[TEACHER].particles), t64(x)).mean(-2)
    f = unit.per_particle(th, t64(x)).sum(-2) / np.sqrt(n)
    assert torch.abs(f.detach()).max() < 1e-12  # paired start: output 0
    (g,) = torch.autograd.grad(((f - y) ** 2).sum(-1).mean(), th)
    np.testing.assert_allclose(res.final_particles[0], start - eta * g.numpy(), rtol=1e-12,
                               atol=1e-14)


@pytest.fixture(scope="module")
def tangent_ds():
    cfg = NoetherConfig.from_dict({"tangent": {"etas": [0.04, 0.02, 0.01],
                                               "identity_flow_time": 0.2,
                                               "n_particles": [16, 64, 256],
                                               "function_time": 10.0}})
    return run_study("tangent", cfg, threads=1)[0]


def test_energy_defect_is_first_order_and_kernel_moves_only_in_mean_field(tangent_ds):
    assert abs(float(tangent_ds.energy_defect_slope) - 1.0) < 0.1
    assert float(tangent_ds.energy_defect.max()) < 0.05
    k = tangent_ds.kernel_movement_slope
    assert float(k.sel(scaling="mean_field")) > -0.2
    assert float(k.sel(scaling="ntk")) < -0.45
    p = tangent_ds.particle_movement_slope
    assert abs(float(p.sel(scaling="ntk")) + 0.5) < 0.15
    assert abs(float(p.sel(scaling="mean_field"))) < 0.15
    move = tangent_ds.kernel_movement
    assert float(move.sel(scaling="mean_field").min()) > 0.05


# ---------------------------------------------------------------------------------------
# configuration, failures, figures
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("block", "values", "named"), [
    ("momentum", {"shown_points": 5}, "noether.momentum.shown_points = 5"),
    ("momentum", {"population_points": 64}, "noether.momentum.population_points = 64"),
    ("momentum", {"orbit_points": [4, 2]}, "noether.momentum.orbit_points = [4, 2]"),
    ("tangent", {"n_particles": [16, 33]}, "noether.tangent.n_particles = [16, 33]"),
    ("balance", {"etas": [0.01]}, "noether.balance.etas = [0.01]"),
    ("balance", {"resnet_depth": 1}, "noether.balance.resnet_depth = 1"),
])
def test_bad_settings_are_refused_naming_the_value(block, values, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        NoetherConfig.from_dict({block: values})


def test_non_finite_results_are_refused_not_written(monkeypatch, tmp_path):
    from mfsym.studies import noether

    def broken(common, setting, threads=None):
        ds = bal.balance_study(common, bal.BalanceSetting(etas=(0.02, 0.01), flow_time=0.02,
                                                          run_eta=0.01, n_snapshots=2))
        return ds.assign(step_change=ds.step_change * np.nan)

    monkeypatch.setitem(noether.STUDIES, "balance",
                        (noether._seed_study(broken, "balance"), "t"))
    with pytest.raises(FloatingPointError, match="step_change"):
        run_study("balance", {}, threads=1)


@pytest.mark.parametrize(("name", "fixture"), [("fig_layer_balance", "balance_ds"),
                                               ("fig_angular_momentum", "momentum_ds"),
                                               ("fig_tangent_kernel", "tangent_ds")])
def test_seed_figures_are_written(name, fixture, request, tmp_path):
    path = write_dataset(request.getfixturevalue(fixture), tmp_path / "s.nc", {}, "study")
    outputs = {"pdf": tmp_path / f"{name}.pdf", "png": tmp_path / f"{name}.png"}
    noether_figure_job(name, path, {"context": "paper", "style": "whitegrid", "dpi": 40},
                       outputs)
    assert outputs["pdf"].read_bytes()[:5] == b"%PDF-"
    assert outputs["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_manuscript_numbers_are_the_study_values(balance_ds, momentum_ds, tangent_ds):
    macros = seed_macros({"balance": balance_ds, "momentum": momentum_ds,
                          "tangent": tangent_ds}, 3)
    assert macros["mfBalanceSlopeTanh"] == format_number(
        float(balance_ds.step_change_slope.sel(activation="tanh")), 3)
    assert macros["mfMomentumRaw"] == format_number(float(momentum_ds.j_rel_raw_max), 3)
    assert macros["mfTangentKernelLargeNtk"] == format_number(
        float(tangent_ds.kernel_movement.sel(scaling="ntk").isel(N=-1)), 3)
    with pytest.raises(ValueError, match="unknown Noether seed studies"):
        seed_macros({"drift": balance_ds}, 3)
