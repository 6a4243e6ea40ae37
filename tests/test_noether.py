"""Noether charges and finite-group invariance as exact checks of the engine (PAPER.md §9).

The engine's force is compared with an independent autograd implementation of each
scheme's loss; the charge identities are then checked in float64.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import yaml

from mfsym.core.groups import c2_swap, cyclic_group, symmetric_group
from mfsym.core.teachers import random_teacher
from mfsym.core.units import make_unit
from mfsym.engine.training import RunSpec, TrainConfig, train_stack
from mfsym.figures.noether import FIGURES, noether_figure_job
from mfsym.figures.noether_seed import FIGURES as SEED_FIGURES
from mfsym.measure.noether import (
    charge_drift,
    charge_identity_error,
    charges,
    decayed_charges,
    force_from_update,
    gram_charge,
    loglog_slope,
    multiplication_table,
    orbit_pairing_error,
    predicted_charges,
    symmetrized_inputs,
)
from mfsym.records.results import read_dataset, write_dataset
from mfsym.studies.noether import (
    NoetherConfig,
    attraction_study,
    drift_study,
    invariance_study,
)

HOMOGENEOUS = ("relu", "leaky_relu", "linear")
LEAKY_SLOPE = 0.1
TORCH_ACT = {
    "relu": torch.relu,
    "leaky_relu": lambda h: torch.nn.functional.leaky_relu(h, LEAKY_SLOPE),
    "linear": lambda h: h,
    "tanh": torch.tanh,
}
STUDY_SCHEMES = ("vanilla", "DA", "DA-orbit", "FA", "EA")


def uv_setting(activation: str, gxy=None):
    gxy = gxy or c2_swap()
    d = gxy.x.shape[1]
    unit = make_unit("uv", d, d, activation, LEAKY_SLOPE)
    return unit, unit.group(gxy)


# ---------------------------------------------------------------------------------------
# an independent reference: the scheme losses written out and differentiated by autograd
# ---------------------------------------------------------------------------------------
def reference_phi(theta, x, activation, dx):
    """Φ(x) = (1/N) Σ_i v_i act(u_i·x / dx) for particles (N, dx+dy), inputs (S, dx)."""
    u, v = theta[:, :dx], theta[:, dx:]
    return TORCH_ACT[activation](x @ u.T / dx) @ v / theta.shape[0]


def reference_force(theta, x, teacher, group, activation, scheme, da_elements=None):
    """Per-particle force ``F_i = N ∂loss/∂θ_i`` of the scheme's minibatch loss (float64)."""
    dx = group.dim_x
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    xs = torch.tensor(x, dtype=torch.float64)
    gx, gy = (torch.tensor(m, dtype=torch.float64) for m in (group.x, group.y))
    teacher_t = torch.tensor(teacher, dtype=torch.float64)

    def phi(p, inputs):
        return reference_phi(p, inputs, activation, dx)

    y = phi(teacher_t, xs)
    if scheme == "vanilla":
        loss = ((phi(th, xs) - y) ** 2).sum(-1).mean()
    elif scheme == "EA":
        proj = torch.tensor(group.reynolds(), dtype=torch.float64)
        loss = ((phi(th @ proj.T, xs) - y) ** 2).sum(-1).mean()
    elif scheme == "DA":  # one group element per sample, given
        xg = torch.einsum("bij,bj->bi", gx[da_elements], xs)
        yg = torch.einsum("bij,bj->bi", gy[da_elements], y)
        loss = ((phi(th, xg) - yg) ** 2).sum(-1).mean()
    elif scheme == "DA-orbit":
        views = zip(gx, gy, strict=True)
        loss = sum(((phi(th, xs @ a.T) - y @ b.T) ** 2).sum(-1).mean() for a, b in views)
        loss = loss / group.order
    elif scheme == "FA":
        views = zip(gx, gy, strict=True)
        pred = sum(phi(th, xs @ a.T) @ b for a, b in views) / group.order  # gᵀ Φ(g x)
        loss = ((pred - y) ** 2).sum(-1).mean()
    else:  # pragma: no cover - a typo in the test itself
        raise AssertionError(scheme)
    loss.backward()
    return theta.shape[0] * th.grad.numpy()


def one_step(activation, schemes, eta, lam, n=6, n_train=3, seed=0):
    """One noiseless full-batch step of the engine for each study scheme.

    Returns (unit, group, teacher, x, {scheme: (θ0, θ1)}).
    """
    unit, group = uv_setting(activation)
    teacher = random_teacher(group, "WI", 2, np.random.default_rng(5), scale=1.0)
    x = 1.5 * np.random.default_rng(6).standard_normal((n_train, group.dim_x))
    out = {}
    for da_mode in ("random", "orbit"):
        names = [s for s in schemes if (s == "DA-orbit") == (da_mode == "orbit")]
        if not names:
            continue
        cfg = TrainConfig(
            alpha=eta * n, T=1.0 / n, tau=lam / 2.0, beta=0.0, init_std=0.7, da_mode=da_mode,
            n_snapshots=2, n_eval=8, dtype="float64", device="cpu",
        )
        runs = [RunSpec("t", "DA" if s == "DA-orbit" else s, seed) for s in names]
        res = train_stack(group, unit, {"t": teacher}, runs, n, "WI", cfg, x_train=x)
        assert list(res.steps) == [0, 1]
        for i, s in enumerate(names):
            out[s] = (res.initial_particles[i], res.final_particles[i])
    return unit, group, teacher.particles, x, out


def engine_force_matches_reference(theta0, theta1, x, teacher, group, activation, scheme,
                                   eta, lam):
    """The reference force g with θ1 = θ0 − η(g + λθ0) (DA: the matching g-draw)."""
    recovered = force_from_update(theta0, theta1, eta, lam)
    if scheme != "DA":
        candidates = [reference_force(theta0, x, teacher, group, activation, scheme)]
    else:  # the engine draws one element per sample: one of the |G|^B assignments matches
        grids = np.meshgrid(*[np.arange(group.order)] * x.shape[0], indexing="ij")
        draws = np.stack([g.ravel() for g in grids], axis=1)
        candidates = [
            reference_force(theta0, x, teacher, group, activation, scheme, d) for d in draws
        ]
    errs = [np.abs(c - recovered).max() / np.abs(c).max() for c in candidates]
    best = int(np.argmin(errs))
    return candidates[best], errs[best]


def matched_da_draws(activation, seed):
    """The one assignment of group elements to samples that reproduces the engine's DA step,
    and the relative error of the next-best assignment."""
    eta, lam = 0.07, 0.6
    _, group, teacher, x, steps = one_step(activation, ("DA",), eta, lam, seed=seed)
    theta0, theta1 = steps["DA"]
    recovered = force_from_update(theta0, theta1, eta, lam)
    grids = np.meshgrid(*[np.arange(group.order)] * x.shape[0], indexing="ij")
    draws = np.stack([g.ravel() for g in grids], axis=1)
    errs = []
    for d in draws:
        ref = reference_force(theta0, x, teacher, group, activation, "DA", d)
        errs.append(np.abs(ref - recovered).max() / np.abs(ref).max())
    order = np.argsort(errs)
    return draws[order[0]], errs[order[0]], errs[order[1]]


def test_da_step_augments_with_the_drawn_elements():
    """DA's step matches exactly one assignment of group elements to the samples, and over a
    few seeds both elements of C₂ are drawn: a DA that never transforms its samples (always
    the identity) fails here."""
    used = set()
    for seed in range(4):
        draw, best, second = matched_da_draws("relu", seed)
        assert best < 1e-10 and second > 1e-4, (seed, best, second)
        used |= set(draw.tolist())
    assert used == {0, 1}, used


# ---------------------------------------------------------------------------------------
# the exact one-step identity
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", HOMOGENEOUS)
def test_one_step_charge_identity_with_independent_force(activation):
    eta, lam = 0.07, 0.6
    unit, group, teacher, x, steps = one_step(activation, STUDY_SCHEMES, eta, lam)
    for scheme, (th0, th1) in steps.items():
        g, force_err = engine_force_matches_reference(
            th0, th1, x, teacher, group, activation, scheme, eta, lam
        )
        assert force_err < 1e-10, (scheme, force_err)
        assert np.abs(g).max() > 1e-3  # a real step, not a trivially small one
        q0, q1 = charges(th0, unit), charges(th1, unit)
        pred = predicted_charges(q0, g, unit, eta, lam)
        rel = np.abs(q1 - pred).max() / np.abs(q1).max()
        assert rel < 1e-10, (scheme, rel)
        # the η² term is what the identity is about: without it the error is visible
        naive = np.abs(q1 - (1 - eta * lam) ** 2 * q0).max() / np.abs(q1).max()
        assert naive > 1e3 * max(rel, 1e-16), (scheme, naive)


def test_one_step_gram_identity_for_linear_units():
    eta, lam = 0.05, 0.3
    unit, group, teacher, x, steps = one_step("linear", STUDY_SCHEMES, eta, lam)
    for scheme, (th0, th1) in steps.items():
        g, _ = engine_force_matches_reference(th0, th1, x, teacher, group, "linear", scheme,
                                              eta, lam)
        c0, c1 = gram_charge(th0, unit), gram_charge(th1, unit)
        g_u, g_v = g[:, : unit.dx], g[:, unit.dx :]
        pred = (1 - eta * lam) ** 2 * c0 + eta**2 * (g_v @ g_v.T - g_u @ g_u.T)
        assert np.abs(c1 - pred).max() < 1e-10 * np.abs(c1).max(), scheme
        np.testing.assert_allclose(np.diag(c0), charges(th0, unit), rtol=0, atol=1e-15)


@pytest.mark.parametrize("activation", HOMOGENEOUS)
def test_identity_error_is_rounding_for_homogeneous_units(activation):
    eta, lam = 0.05, 0.2
    unit, *_, steps = one_step(activation, STUDY_SCHEMES, eta, lam)
    for scheme, (th0, th1) in steps.items():
        assert charge_identity_error(th0, th1, unit, eta, lam) < 1e-12, scheme


def test_identity_fails_for_tanh_negative_control():
    eta, lam = 0.05, 0.2
    unit, *_, steps = one_step("tanh", ("vanilla", "FA"), eta, lam)
    for scheme, (th0, th1) in steps.items():
        assert charge_identity_error(th0, th1, unit, eta, lam) > 1e-5, scheme


# ---------------------------------------------------------------------------------------
# drift against the step size (via the study that feeds the figure)
# ---------------------------------------------------------------------------------------
def small_config(**blocks):
    base = {"n_particles": 8, "batch_size": 8, "train_size": 6, "n_eval": 64,
            "teacher_particles": 2}
    return NoetherConfig.from_dict({**base, **blocks})


@pytest.fixture(scope="module")
def drift_ds():
    cfg = small_config(drift={
        "activations": ["relu", "leaky_relu", "linear", "tanh"],
        "schemes": ["vanilla", "DA", "DA-orbit", "FA", "EA"],
        "modes": ["online", "full_batch"], "etas": [0.02, 0.01], "flow_time": 1.0,
        "decay_eta": 0.01, "decay_lambdas": [0.5, 2.0], "langevin_eta": 0.02,
        "langevin_betas": [1e-6, 1e-4, 1e-2],
    })
    return drift_study(cfg, threads=1)


def test_full_batch_drift_halves_with_the_step(drift_ds):
    fb = drift_ds.charge_drift.sel(mode="full_batch", activation=list(HOMOGENEOUS))
    ratio = fb.sel(eta=0.02) / fb.sel(eta=0.01)
    assert float(ratio.min()) >= 1.8 and float(ratio.max()) <= 2.2, ratio.values
    gram = drift_ds.gram_charge_drift.sel(mode="full_batch")
    gram_ratio = gram.sel(eta=0.02) / gram.sel(eta=0.01)
    assert float(gram_ratio.min()) >= 1.8 and float(gram_ratio.max()) <= 2.2


def test_online_drift_is_first_order_in_the_step(drift_ds):
    # Each step size sees another sample sequence, so |g|² fluctuates between the two runs:
    # the slope is 1 up to that sampling noise (and far from tanh's 0).
    slopes = drift_ds.drift_slope.sel(mode="online", activation=list(HOMOGENEOUS))
    assert float(slopes.min()) > 0.7 and float(slopes.max()) < 1.4, slopes.values


def test_tanh_drift_is_order_one(drift_ds):
    drift = drift_ds.charge_drift.sel(eta=0.01)
    tanh, relu = drift.sel(activation="tanh"), drift.sel(activation="relu")
    assert float((tanh / relu).min()) > 10, (tanh / relu).values
    # it does not shrink with the step: the flow itself moves the charge
    ratio = drift_ds.charge_drift.sel(activation="tanh", eta=0.02) / tanh
    assert float(ratio.max()) < 1.3 and float(ratio.min()) > 0.7


def test_weight_decay_contracts_charges_exponentially(drift_ds):
    final, pred = drift_ds.charge_final.values, drift_ds.charge_decayed.values
    q0 = drift_ds.charge_initial.values
    assert np.abs(final - pred).max() < 0.05 * np.abs(q0).max()
    # and the prediction is not trivially close: the charges did shrink
    assert np.abs(final - q0).max() > 0.3 * np.abs(q0).max()


def test_langevin_drift_grows_like_sqrt_beta(drift_ds):
    assert 0.35 < float(drift_ds.langevin_slope) < 0.65
    assert float(drift_ds.langevin_drift.max()) > 10 * float(drift_ds.noiseless_drift)


def test_drift_dataset_is_writable(drift_ds, tmp_path):
    path = write_dataset(drift_ds, tmp_path / "drift.nc", {"noether": {}}, "drift")
    back = read_dataset(path)
    np.testing.assert_array_equal(back.charge_drift.values, drift_ds.charge_drift.values)
    assert list(back.scheme.values) == ["vanilla", "DA", "DA-orbit", "FA", "EA"]


# ---------------------------------------------------------------------------------------
# finite-N invariance
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def invariance_ds():
    cfg = small_config(invariance={"eta": 0.02, "flow_time": 1.0, "n_snapshots": 3})
    return invariance_study(cfg, threads=1)


def test_equivariant_schemes_keep_si_start_on_fixed_subspace(invariance_ds):
    online = invariance_ds.dist_fixed.sel(mode="online")
    for scheme in ("FA", "DA-orbit", "EA"):
        assert float(online.sel(scheme=scheme).max()) < 1e-12, scheme
    for scheme in ("vanilla", "DA"):  # negative control: finite minibatches break symmetry
        assert float(online.sel(scheme=scheme).isel(time=-1)) > 1e-4, scheme


def test_symmetrised_training_set_keeps_vanilla_on_fixed_subspace(invariance_ds):
    vanilla = invariance_ds.dist_fixed.sel(scheme="vanilla")
    assert float(vanilla.sel(mode="full_batch_symmetrized").max()) < 1e-12
    assert float(vanilla.sel(mode="full_batch").isel(time=-1)) > 1e-4


def test_orbit_pairs_stay_paired_under_equivariant_drift(invariance_ds):
    pairing = invariance_ds.pairing_error
    for scheme in ("FA", "DA-orbit", "EA"):
        assert float(pairing.sel(scheme=scheme).max()) < 1e-12, scheme
    assert float(pairing.sel(scheme="vanilla", mode="full_batch_symmetrized").max()) < 1e-12
    assert float(pairing.sel(scheme="vanilla", mode="online").isel(time=-1)) > 1e-4


# ---------------------------------------------------------------------------------------
# weight-decay attraction
# ---------------------------------------------------------------------------------------
def test_weight_decay_pulls_towards_fixed_subspace_at_a_loss():
    cfg = small_config(attraction={"lambdas": [0.0, 1.0], "eta": 0.05, "flow_time": 4.0,
                                   "n_snapshots": 2})
    ds = attraction_study(cfg, threads=1)
    dist = ds.dist_fixed.isel(time=-1, scheme=0)
    assert float(dist.sel(decay_lambda=1.0)) < 0.2 * float(dist.sel(decay_lambda=0.0))
    risk = ds.population_risk.isel(time=-1, scheme=0)
    assert float(risk.sel(decay_lambda=1.0)) > float(risk.sel(decay_lambda=0.0))
    start = ds.dist_fixed.isel(time=0, scheme=0).values  # every λ starts from one cloud
    np.testing.assert_array_equal(start, start[0])


# ---------------------------------------------------------------------------------------
# the diagnostics themselves
# ---------------------------------------------------------------------------------------
def test_charges_by_hand():
    unit, _ = uv_setting("relu")
    theta = np.array([[1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(charges(theta, unit), [9.0 - 5.0, 2.0])
    np.testing.assert_array_equal(gram_charge(theta, unit), [[4.0, 3.0], [3.0, 2.0]])
    assert charge_drift([1.0, 2.0], [1.5, 1.0]) == 1.0


def test_charges_are_invariant_under_the_group_and_change_under_rescaling():
    unit, group = uv_setting("relu", symmetric_group(3))
    theta = np.random.default_rng(0).standard_normal((7, unit.dim_z))
    for g in range(group.order):
        np.testing.assert_allclose(charges(group.act(theta, g), unit), charges(theta, unit),
                                   atol=1e-12)
        np.testing.assert_allclose(gram_charge(group.act(theta, g), unit),
                                   gram_charge(theta, unit), atol=1e-12)
    scaled = theta.copy()
    scaled[:, : unit.dx] *= 2.0
    scaled[:, unit.dx :] /= 2.0
    x = torch.tensor(np.random.default_rng(1).standard_normal((5, unit.dx)))
    out = unit.output(torch.tensor(theta), x)
    np.testing.assert_allclose(unit.output(torch.tensor(scaled), x), out, atol=1e-12)
    assert np.abs(charges(scaled, unit) - charges(theta, unit)).max() > 0.1


def test_charges_reject_other_units_and_shapes():
    with pytest.raises(ValueError, match="'matrix' unit"):
        charges(np.zeros((3, 4)), make_unit("matrix", 2, 2, "sigmoid"))
    unit, _ = uv_setting("relu")
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 4\)"):
        charges(np.zeros((3, 5)), unit)
    with pytest.raises(ValueError, match="eta must be > 0"):
        force_from_update(np.zeros((2, 4)), np.zeros((2, 4)), 0.0)


def test_decayed_charges_and_slope():
    np.testing.assert_allclose(decayed_charges([2.0, -1.0], 0.5, 2.0), np.exp(-2.0) * np.array(
        [2.0, -1.0]))
    x = np.array([0.01, 0.02, 0.04])
    assert loglog_slope(x, 3.0 * x**1.5) == pytest.approx(1.5, abs=1e-12)
    with pytest.raises(ValueError, match="positive"):
        loglog_slope(x, np.array([1.0, 0.0, 1.0]))


@pytest.mark.parametrize("gxy", [c2_swap(), cyclic_group(3), symmetric_group(3)],
                         ids=["C2", "C3", "S3"])
def test_multiplication_table_and_pairing_error(gxy):
    unit, group = uv_setting("relu", gxy)
    table = multiplication_table(group)
    order = group.order
    for h in range(order):  # a Latin square matching the matrix products
        assert sorted(table[h]) == list(range(order)) == sorted(table[:, h])
        for k in range(order):
            np.testing.assert_allclose(group.z[h] @ group.z[k], group.z[table[h, k]])
    base = np.random.default_rng(2).standard_normal((4, unit.dim_z))
    paired = group.symmetrize(base)
    assert orbit_pairing_error(paired, group) < 1e-14
    broken = paired.copy()
    broken[1, 0] += 0.25  # the first block is the identity's: atom 1 = base atom 1
    assert orbit_pairing_error(broken, group) == pytest.approx(0.25, rel=1e-12)
    stacked = np.stack([paired, broken])
    np.testing.assert_allclose(orbit_pairing_error(stacked, group), [0.0, 0.25], atol=1e-14)
    with pytest.raises(ValueError, match="orbit-paired cloud"):
        orbit_pairing_error(paired[:-1], group)


def test_symmetrized_inputs_form_an_invariant_set():
    _, group = uv_setting("relu", symmetric_group(3))
    x = np.random.default_rng(3).standard_normal((5, 3))
    sym = symmetrized_inputs(x, group)
    assert sym.shape == (30, 3)
    key = {tuple(np.round(r, 12)) for r in sym}
    for g in group.x:
        assert {tuple(np.round(r, 12)) for r in sym @ g.T} == key


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['etaz'\] in noether.drift"):
        NoetherConfig.from_dict({"drift": {"etaz": [0.1]}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['bogus'\]"):
        NoetherConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="noether.drift.schemes"):
        NoetherConfig.from_dict({"drift": {"schemes": ["vanilla", "XA"]}})
    with pytest.raises(ValueError, match="noether.drift.etas"):
        NoetherConfig.from_dict({"drift": {"etas": [0.1, -0.1]}})
    with pytest.raises(ValueError, match="noether.drift.unit"):
        NoetherConfig.from_dict({"drift": {"unit": "matrix"}})
    with pytest.raises(ValueError, match="noether.invariance.teacher_kind"):
        NoetherConfig.from_dict({"invariance": {"teacher_kind": "arbitrary"}})
    with pytest.raises(ValueError, match="noether.n_particles"):
        NoetherConfig.from_dict({"n_particles": 0})
    with pytest.raises(ValueError, match="divisible"):
        invariance_study({"n_particles": 7}, threads=1)


# ---------------------------------------------------------------------------------------
# configuration contract and figures
# ---------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def schema_defaults(schema: dict) -> dict:
    """The defaults the schema fills into an empty object, recursively."""
    out = {}
    for key, sub in schema.get("properties", {}).items():
        if "default" in sub:
            value = sub["default"]
            out[key] = schema_defaults(sub) if value == {} else value
    return out


def test_schema_defaults_are_the_library_defaults():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    defaults = schema_defaults(schema["properties"]["noether"])
    defaults.pop("resources")
    cfg = NoetherConfig.from_dict(defaults)
    assert cfg == NoetherConfig.from_dict({})
    for block in ("drift", "invariance", "attraction", "balance", "momentum", "tangent"):
        assert set(defaults[block]) == {f.name for f in fields(getattr(cfg, block))}


def test_config_section_validates_and_builds():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(config)
    NoetherConfig.from_dict({k: v for k, v in config["noether"].items() if k != "resources"})
    config["noether"]["drift"]["etas"] = [0.01, -0.01]
    config["noether"]["invariance"]["flowtime"] = 1.0
    messages = " ".join(e.message for e in validator.iter_errors(config))
    assert "-0.01" in messages and "flowtime" in messages


@pytest.mark.parametrize("name", sorted(set(FIGURES) - set(SEED_FIGURES)))
def test_figures_are_written(name, drift_ds, invariance_ds, tmp_path):
    if name == "fig_weight_decay_attraction":
        cfg = small_config(attraction={"lambdas": [0.0, 0.5], "eta": 0.05, "flow_time": 1.0,
                                       "n_snapshots": 2})
        ds = attraction_study(cfg, threads=1)
    else:
        ds = drift_ds if name == "fig_noether_drift" else invariance_ds
    path = write_dataset(ds, tmp_path / "study.nc", {}, "study")
    outputs = {"pdf": tmp_path / f"{name}.pdf", "png": tmp_path / f"{name}.png"}
    noether_figure_job(name, path, {"context": "paper", "style": "whitegrid", "dpi": 40},
                       outputs)
    assert outputs["pdf"].read_bytes()[:5] == b"%PDF-"
    assert outputs["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unknown Noether figure"):
        noether_figure_job("fig_nope", path, {}, outputs)
