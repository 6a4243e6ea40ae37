"""Balanced layers of the mlp unit and of the linear mean-ODE ResNet (PAPER.md §9b, 1–2).

Every training goes through the engine in float64 (``train_config``), full-batch gradient
descent on the common fixed training set, vanilla scheme, from a generic (WI) start; a
study is parametrised by the step η and the flow time s (``α = ηN``, ``T = s/(ηN)``).

* One step per η with λ = 0: the largest change of the per-neuron balance
  ``b_k = |row_k W₁|² − |col_k W₂|²`` (all activations) and of the linear unit's whole
  ``C = W₁W₁ᵀ − W₂ᵀW₂``: O(η²) for homogeneous activations, O(η) for tanh.
* One step at ``identity_eta`` with weight decay λ: the relative error of the closed form
  ``C ← (1 − ηλ)² C + η² (G₁G₁ᵀ − G₂ᵀG₂)`` (diagonal for relu / leaky_relu, whole matrix for
  linear, diagonal for tanh, where it fails), the force recovered from the update.
* A run of flow time s: mean over particles of ``‖W₁‖²_F`` and ``‖W₂‖²_F`` and the largest
  ``|b_k(s) − b_k(0)|`` over time.
* The ResNet of depth L, M particles per layer, linear matrix units: one step per η, the
  change of ``D_l = W_lW_lᵀ − W_{l+1}ᵀW_{l+1}`` (O(η²)) and its closed-form error, the change of
  the in-layer deviations ``z_{l,i} − Z̄_l`` (rounding) and, as the control, of the raw-mean
  balance ``Z̄_lZ̄_lᵀ − Z̄_{l+1}ᵀZ̄_{l+1}`` (O(η)); see :mod:`mfsym.measure.balance`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import xarray as xr

from ..core.groups import group_xy
from ..core.teachers import Teacher, random_teacher
from ..core.units import ACTIVATIONS, make_unit
from ..engine.models import ResNet, repeat_layers
from ..measure.balance import (
    layer_balance,
    layer_deviations,
    max_change,
    mlp_layers,
    neuron_balance,
    predicted_layer_balance,
    predicted_resnet_balance,
    relative_identity_error,
    resnet_balance,
    resnet_mean_balance,
)
from ..measure.noether import force_from_update, loglog_slope
from ..records.results import variable
from .noether_base import (
    TEACHER,
    CommonSetting,
    _check,
    _choices,
    _count,
    _nonneg,
    _numbers,
    _positive,
    _Problem,
    train_schemes,
    training_inputs,
)

SCHEME = "vanilla"
#: Activations whose hidden-neuron rescaling is a symmetry (the balance laws hold).
HOMOGENEOUS = ("relu", "leaky_relu", "linear")
PRECISION = "float64 (exact one-step identities are compared to rounding)"


@dataclass(frozen=True)
class BalanceSetting:
    """The balance study (module docstring); etas: one-step sizes; hidden: h of the mlp unit;
    resnet_depth / resnet_per_layer: L and M of the linear ResNet."""

    activations: tuple = ("relu", "leaky_relu", "linear", "tanh")
    hidden: int = 4
    teacher_kind: str = "WI"
    etas: tuple = (0.08, 0.04, 0.02, 0.01, 0.005)
    identity_eta: float = 0.05
    identity_weight_decay: float = 0.5
    run_eta: float = 0.0025
    flow_time: float = 4.0
    n_snapshots: int = 41
    resnet_depth: int = 3
    resnet_per_layer: int = 4

    def __post_init__(self):
        w = "balance."
        object.__setattr__(self, "activations",
                           _choices(self.activations, ACTIVATIONS, w, "activations"))
        object.__setattr__(self, "etas", _numbers(self.etas, _positive, w, "etas", "> 0"))
        _check(len(self.etas) >= 2, w, "etas", list(self.etas), "at least two step sizes")
        _check(self.teacher_kind in ("arbitrary", "WI", "SI"), w, "teacher_kind",
               self.teacher_kind, "allowed: ['arbitrary', 'WI', 'SI']")
        for key in ("identity_eta", "run_eta", "flow_time"):
            _check(_positive(getattr(self, key)), w, key, getattr(self, key), "a number > 0")
        _check(_nonneg(self.identity_weight_decay), w, "identity_weight_decay",
               self.identity_weight_decay, "a number ≥ 0")
        for key, least in (("hidden", 1), ("n_snapshots", 2), ("resnet_depth", 2),
                           ("resnet_per_layer", 1)):
            _check(_count(getattr(self, key), least), w, key, getattr(self, key),
                   f"an integer ≥ {least}")


def _mlp_problem(common: CommonSetting, b: BalanceSetting, activation: str,
                 x_train: np.ndarray) -> _Problem:
    d = common.group_dim
    unit = make_unit("mlp", d, d, activation, common.leaky_slope, hidden=b.hidden,
                     representation="trivial")
    group = unit.group(group_xy(common.group, d))
    rng = np.random.default_rng(common.teacher_seed)
    t = random_teacher(group, b.teacher_kind, common.teacher_particles, rng,
                       common.teacher_scale)
    return _Problem(common, unit, group, {TEACHER: Teacher(TEACHER, t.particles)}, x_train)


def _resnet_problem(common: CommonSetting, b: BalanceSetting, x_train) -> _Problem:
    d = common.group_dim
    unit = make_unit("matrix", d, d, "linear")
    group = unit.group(group_xy(common.group, d))
    rng = np.random.default_rng(common.teacher_seed)
    t = random_teacher(group, b.teacher_kind, common.teacher_particles, rng,
                       common.teacher_scale)
    teacher = Teacher(TEACHER, repeat_layers(t.particles, b.resnet_depth))
    common = replace(common, n_particles=b.resnet_depth * b.resnet_per_layer)
    return _Problem(common, ResNet(unit, b.resnet_depth), group, {TEACHER: teacher}, x_train)


def _one_step(problem: _Problem, eta: float, weight_decay: float = 0.0, threads=None):
    """``(θ0, θ1)`` of one full-batch step of size η (N, D) each."""
    res, i = train_schemes(problem, [SCHEME], "WI", problem.x_train, threads=threads,
                           eta=eta, flow_time=eta, weight_decay=weight_decay)[SCHEME]
    if res.steps[-1] != 1:
        raise RuntimeError(f"a one-step training took {res.steps[-1]} steps")
    return res.initial_particles[i], res.final_particles[i]


def _mlp_steps(common, b: BalanceSetting, x_train, threads) -> dict:
    shape = (len(b.activations), len(b.etas))
    out = {"change": np.zeros(shape), "matrix": np.full(len(b.etas), np.nan),
           "identity": np.zeros(len(b.activations)), "scale": np.zeros(len(b.activations))}
    for a, act in enumerate(b.activations):
        problem = _mlp_problem(common, b, act, x_train)
        dims = (b.hidden, problem.unit.dx, problem.unit.dy)
        for e, eta in enumerate(b.etas):
            th0, th1 = _one_step(problem, eta, threads=threads)
            out["change"][a, e] = max_change(neuron_balance(th0, *dims),
                                             neuron_balance(th1, *dims), 2)
            if act == "linear":
                out["matrix"][e] = max_change(layer_balance(th0, *dims),
                                              layer_balance(th1, *dims), 3)
        lam, eta = b.identity_weight_decay, b.identity_eta
        th0, th1 = _one_step(problem, eta, lam, threads)
        force = force_from_update(th0, th1, eta, lam)
        pred = predicted_layer_balance(th0, force, *dims, eta, lam)
        actual, scale = layer_balance(th1, *dims), np.abs(layer_balance(th0, *dims))
        if act != "linear":  # only the diagonal (per-neuron balance) is a charge
            pred, actual, scale = (np.diagonal(m, axis1=-2, axis2=-1)
                                   for m in (pred, actual, scale))
        out["identity"][a] = relative_identity_error(actual, pred, scale, actual.ndim)
        out["scale"][a] = np.abs(neuron_balance(th0, *dims)).max()
    return out


def _mlp_runs(common, b: BalanceSetting, x_train, threads) -> dict:
    shape = (len(b.activations), b.n_snapshots)
    out = {k: np.zeros(shape) for k in ("first", "second", "drift")}
    times = None
    for a, act in enumerate(b.activations):
        problem = _mlp_problem(common, b, act, x_train)
        dims = (b.hidden, problem.unit.dx, problem.unit.dy)
        res, i = train_schemes(problem, [SCHEME], "WI", x_train, threads=threads,
                               eta=b.run_eta, flow_time=b.flow_time, n_snapshots=b.n_snapshots,
                               keep_particle_snapshots=True)[SCHEME]
        snaps = res.particle_snapshots[i]  # (K, N, D)
        w1, w2 = mlp_layers(snaps, *dims)
        out["first"][a] = (w1**2).sum((-1, -2)).mean(-1)
        out["second"][a] = (w2**2).sum((-1, -2)).mean(-1)
        bal = neuron_balance(snaps, *dims)
        out["drift"][a] = max_change(np.broadcast_to(bal[0], bal.shape), bal, 2)
        times = res.steps * b.run_eta
    return {**out, "times": times}


def _resnet_steps(common, b: BalanceSetting, x_train, threads) -> dict:
    problem = _resnet_problem(common, b, x_train)
    L, d = b.resnet_depth, common.group_dim
    keys = ("change", "identity", "deviation", "mean_change")
    out = {k: np.zeros(len(b.etas)) for k in keys}
    for e, eta in enumerate(b.etas):
        th0, th1 = _one_step(problem, eta, threads=threads)
        d0, d1 = resnet_balance(th0, L, d), resnet_balance(th1, L, d)
        out["change"][e] = max_change(d0, d1, 3)
        out["identity"][e] = relative_identity_error(
            d1, predicted_resnet_balance(th0, th1, L, d), d0, 3)
        out["deviation"][e] = max_change(layer_deviations(th0, L), layer_deviations(th1, L), 3)
        out["mean_change"][e] = max_change(resnet_mean_balance(th0, L, d),
                                           resnet_mean_balance(th1, L, d), 3)
    return out


def _slope(etas, y) -> float:
    y = np.asarray(y, dtype=np.float64)
    return loglog_slope(etas, y) if np.all(y > 0) else float("nan")


def balance_study(common: CommonSetting, b: BalanceSetting,
                  threads: int | None = None) -> xr.Dataset:
    """Layer balances of the mlp unit and of the linear ResNet (module docstring).

    Variables: ``step_change`` (activation, eta) = ``max_{i,k} |Δb_{ik}|`` after one step;
    ``step_change_slope`` (activation); ``matrix_step_change`` (eta) = ``max |ΔC|`` of the
    linear unit; ``identity_error`` (activation); ``balance_scale`` (activation) =
    ``max |b(0)|``; ``norm_first`` / ``norm_second`` / ``balance_drift`` (activation, time);
    ``resnet_step_change``, ``resnet_identity_error``, ``resnet_deviation_change``,
    ``resnet_mean_balance_change`` (eta) with the slopes of the first and last.
    """
    x_train = training_inputs(common, common.group_dim)
    steps = _mlp_steps(common, b, x_train, threads)
    runs = _mlp_runs(common, b, x_train, threads)
    res = _resnet_steps(common, b, x_train, threads)
    slopes = [_slope(b.etas, row) for row in steps["change"]]
    act, eta_dims, run_dims = ("activation",), ("activation", "eta"), ("activation", "time")
    data = {
        "step_change": variable(eta_dims, steps["change"],
                                "max over particles and neurons of |b_k(1 step) - b_k(0)|, "
                                "b_k = |row_k W1|^2 - |col_k W2|^2"),
        "step_change_slope": variable(act, slopes,
                                      "least-squares slope of log step_change on log eta"),
        "identity_error": variable(act, steps["identity"],
                                   "relative error of the one-step closed form "
                                   "C <- (1-eta*lambda)^2 C + eta^2 (G1 G1^T - G2^T G2)"),
        "balance_scale": variable(act, steps["scale"], "max over particles of |b_k(0)|"),
        "norm_first": variable(run_dims, runs["first"], "mean over particles of |W1|_F^2"),
        "norm_second": variable(run_dims, runs["second"], "mean over particles of |W2|_F^2"),
        "balance_drift": variable(run_dims, runs["drift"],
                                  "max over particles and neurons of |b_k(s) - b_k(0)|"),
        "resnet_step_change": variable(("eta",), res["change"],
                                       "max |D_l(1 step) - D_l(0)|, D_l = W_l W_l^T - "
                                       "W_{l+1}^T W_{l+1}, W_l = I + mean_i z_li / L"),
        "resnet_step_change_slope": variable((), _slope(b.etas, res["change"]),
                                             "slope of log resnet_step_change on log eta"),
        "resnet_identity_error": variable(("eta",), res["identity"],
                                          "relative error of D_l <- D_l + dW_l dW_l^T - "
                                          "dW_{l+1}^T dW_{l+1}"),
        "resnet_deviation_change": variable(("eta",), res["deviation"],
                                            "max |change of z_li - mean_i z_li| in one step"),
        "resnet_mean_balance_change": variable(
            ("eta",), res["mean_change"], "max one-step change of the raw-mean balance "
            "Zbar_l Zbar_l^T - Zbar_{l+1}^T Zbar_{l+1} (not conserved: control)"),
        "resnet_mean_balance_slope": variable((), _slope(b.etas, res["mean_change"]),
                                              "slope of log resnet_mean_balance_change on "
                                              "log eta"),
    }
    if "linear" in b.activations:
        data["matrix_step_change"] = variable(("eta",), steps["matrix"],
                                              "max |C(1 step) - C(0)|, C = W1 W1^T - W2^T W2 "
                                              "(linear activation)")
    coords = {
        "activation": list(b.activations),
        "eta": ("eta", np.array(b.etas), {"long_name": "step size eta = alpha/N", "units": "1"}),
        "time": ("time", runs["times"], {"long_name": "flow time s = eta * step", "units": "1"}),
    }
    attrs = {"unit": "mlp", "hidden": b.hidden, "n_particles": common.n_particles,
             "teacher_kind": b.teacher_kind, "mode": "full_batch", "scheme": SCHEME,
             "identity_eta": b.identity_eta, "identity_weight_decay": b.identity_weight_decay,
             "run_eta": b.run_eta, "flow_time": b.flow_time, "resnet_depth": b.resnet_depth,
             "resnet_per_layer": b.resnet_per_layer, "resnet_unit": "matrix (linear)",
             "precision": PRECISION}
    return xr.Dataset(data, coords=coords, attrs=attrs)
