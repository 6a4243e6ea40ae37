"""Time symmetry and the tangent kernel (PAPER.md §9b, item 4).

Both parts train the common setting's ``uv`` unit (activation of the block) by full-batch
gradient descent through the engine (vanilla, float64) on the common fixed training set X.

Energy identity.  For each step η, a run of flow time s with a snapshot at every step:
the relative defect of ``dL/ds = −(4/n²) Σ r K r`` (:func:`mfsym.measure.tangent.energy_defect`),
O(η), with its fitted slope in η.

Kernel movement.  For each N, from one initial draw (the engine's WI particles of that N and
seed), two trainings over the same function time τ:

* mean-field: the engine as it is, ``Φ = (1/N) Σ σ*``, α = ``mf_alpha``, mean-field horizon
  ``T = τ / α`` (N·T steps of size α/N);
(with ``paired_start``, the first N/2 particles (u, v) of the draw and their mirrors
(u, −v), so that both networks start from the output 0: the NTK network's O(1) random output
at t = 0 would otherwise differ from draw to draw of N);

* NTK: ``Φ = (1/√N) Σ σ*`` (:class:`mfsym.engine.models.OutputScaled` with c = √N), gradient
  descent with step ``ntk_step`` independent of N, ``τ / ntk_step`` steps.

In both, the function moves by ``−(2/n) K r`` per unit of τ at first, with the same kernel
``K = (1/N) Σ J Jᵀ`` at t = 0.  The study records ``‖K_T − K_0‖_F / ‖K_0‖_F`` on X against N
and its slope in N, and the relative RMS displacement of the particles: both O(1) in the
mean-field scaling.  In the NTK scaling each particle moves by O(N^{-1/2}); the kernel, an
average over particles of terms whose first-order change has zero mean under the symmetric
initial law (v and −v equally likely), moves by O(N^{-1/2}) at most and, measured, like
N^{-1} (the O(1/N) kernel drift of wide networks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import xarray as xr

from ..core.units import ACTIVATIONS
from ..engine.models import OutputScaled
from ..engine.run_inputs import initial_particles
from ..engine.training import RunSpec, TrainConfig, train_stack
from ..measure.noether import loglog_slope
from ..measure.tangent import (
    energy_defect,
    kernel_movement,
    particle_movement,
    tangent_kernel,
)
from ..records.results import variable
from .noether_base import (
    TEACHER,
    CommonSetting,
    _check,
    _numbers,
    _positive,
    _problem,
    train_schemes,
)

SCHEME = "vanilla"
SCALINGS = ("mean_field", "ntk")
PRECISION = "float64"


@dataclass(frozen=True)
class TangentSetting:
    """The tangent-kernel study (module docstring)."""

    activation: str = "sigmoid"
    etas: tuple = (0.04, 0.02, 0.01, 0.005)
    identity_flow_time: float = 0.5
    n_particles: tuple = (16, 64, 256, 1024)
    function_time: float = 20.0
    mf_alpha: float = 10.0
    ntk_step: float = 0.1
    paired_start: bool = True

    def __post_init__(self):
        w = "tangent."
        _check(self.activation in ACTIVATIONS, w, "activation", self.activation,
               f"allowed: {list(ACTIVATIONS)}")
        object.__setattr__(self, "etas", _numbers(self.etas, _positive, w, "etas", "> 0"))
        _check(len(self.etas) >= 2, w, "etas", list(self.etas), "at least two step sizes")
        ns = tuple(self.n_particles)
        _check(len(ns) >= 2 and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                    for n in ns) and list(ns) == sorted(set(ns)), w,
               "n_particles", list(ns), "an increasing list of at least two integers ≥ 1")
        object.__setattr__(self, "n_particles", ns)
        _check(isinstance(self.paired_start, bool), w, "paired_start", self.paired_start,
               "true or false")
        _check(not self.paired_start or all(n % 2 == 0 for n in ns), w, "n_particles",
               list(ns), "even numbers with paired_start (particles come in (u, v), (u, -v) "
               "pairs)")
        for key in ("identity_flow_time", "function_time", "mf_alpha", "ntk_step"):
            _check(_positive(getattr(self, key)), w, key, getattr(self, key), "a number > 0")


def _energy_defects(common: CommonSetting, t: TangentSetting, threads) -> np.ndarray:
    problem = _problem(common, "uv", t.activation, "WI")
    targets = _targets(problem)
    out = np.zeros(len(t.etas))
    for e, eta in enumerate(t.etas):
        n_steps = int(round(t.identity_flow_time / eta))
        res, i = train_schemes(problem, [SCHEME], "WI", problem.x_train, threads=threads,
                               eta=eta, flow_time=n_steps * eta, n_snapshots=n_steps + 1,
                               keep_particle_snapshots=True)[SCHEME]
        if not np.array_equal(res.steps, np.arange(n_steps + 1)):
            raise RuntimeError("the energy identity needs a snapshot at every step")
        out[e] = energy_defect(res.particle_snapshots[i], problem.x_train, targets,
                               problem.unit, eta)[0]
    return out


def _targets(problem) -> np.ndarray:
    """``y = Φ_teacher(x)`` on the training set, float64 (S, dy)."""
    cloud = torch.as_tensor(problem.teachers[TEACHER].particles, dtype=torch.float64)
    x = torch.as_tensor(problem.x_train, dtype=torch.float64)
    with torch.no_grad():
        return problem.unit.per_particle(cloud, x).mean(-2).numpy()


def antisymmetric_pairs(cloud: np.ndarray, dx: int) -> np.ndarray:
    """The first N/2 uv particles ``(u, v)`` of ``cloud (N, D)`` followed by ``(u, −v)``: the
    network output is exactly 0 at the start, in either scaling, for the same draw."""
    half = np.asarray(cloud[: cloud.shape[0] // 2], dtype=np.float64)
    mirror = half.copy()
    mirror[:, dx:] *= -1.0
    return np.concatenate([half, mirror])


def _config(common: CommonSetting, alpha: float, T: float) -> TrainConfig:
    return TrainConfig(alpha=alpha, T=T, tau=0.0, beta=0.0, input_std=common.input_std,
                       init_std=common.init_std, n_snapshots=2, snapshot_spacing="linear",
                       n_eval=common.n_eval, dtype="float64", device=common.device,
                       backend="eager", check_every=1000)


def _movement(common: CommonSetting, t: TangentSetting, threads) -> dict:
    """Kernel movement and final loss per N, for both scalings, from one initial draw."""
    keys = ("move", "particles", "loss", "loss0")
    out = {k: np.zeros((len(SCALINGS), len(t.n_particles))) for k in keys}
    run = [RunSpec(TEACHER, SCHEME, common.seed)]
    for j, n in enumerate(t.n_particles):
        problem = _problem(replace(common, n_particles=n), "uv", t.activation, "WI")
        start = initial_particles(problem.group, n, common.seed, "WI", common.init_std)
        if t.paired_start:
            start = antisymmetric_pairs(start, problem.unit.dx)
        ntk_steps = max(1, int(round(t.function_time / t.ntk_step)))
        models = {"mean_field": (problem.unit, _config(common, t.mf_alpha,
                                                       t.function_time / t.mf_alpha)),
                  "ntk": (OutputScaled(problem.unit, float(np.sqrt(n))),
                          _config(common, t.ntk_step, ntk_steps / n))}
        for s, name in enumerate(SCALINGS):
            model, cfg = models[name]
            res = train_stack(problem.group, model, problem.teachers, run, n, "WI", cfg,
                              init_particles={common.seed: start}, x_train=problem.x_train,
                              threads=threads, label=f"tangent {name} N={n}")
            k0 = tangent_kernel(res.initial_particles[0], problem.x_train, problem.unit)
            k1 = tangent_kernel(res.final_particles[0], problem.x_train, problem.unit)
            out["move"][s, j] = kernel_movement(k0, k1)
            out["particles"][s, j] = particle_movement(res.initial_particles[0],
                                                       res.final_particles[0])
            out["loss0"][s, j], out["loss"][s, j] = res.train_loss[0, 0], res.train_loss[0, -1]
    return out


def tangent_study(common: CommonSetting, t: TangentSetting,
                  threads: int | None = None) -> xr.Dataset:
    """The energy identity's defect against η and the kernel movement against N.

    Variables: ``energy_defect`` (eta) and ``energy_defect_slope``; ``kernel_movement``
    (scaling, N) = ``‖K_T − K_0‖_F / ‖K_0‖_F`` and ``kernel_movement_slope`` (scaling);
    ``loss_initial`` / ``loss_final`` (scaling, N): the training loss at the first step and
    over the last window.
    """
    defects = _energy_defects(common, t, threads)
    move = _movement(common, t, threads)
    ns = np.array(t.n_particles, dtype=np.float64)
    slopes = [loglog_slope(ns, row) for row in move["move"]]
    p_slopes = [loglog_slope(ns, row) for row in move["particles"]]
    sd = ("scaling", "N")
    data = {
        "energy_defect": variable(("eta",), defects,
                                  "max_k |(L_{k+1}-L_k)/eta + (4/n^2) r_k^T K_k r_k| / "
                                  "max_k (4/n^2) r_k^T K_k r_k"),
        "energy_defect_slope": variable((), loglog_slope(t.etas, defects),
                                        "least-squares slope of log energy_defect on log eta"),
        "kernel_movement": variable(sd, move["move"], "|K_T - K_0|_F / |K_0|_F on the "
                                                      "training set"),
        "kernel_movement_slope": variable(("scaling",), slopes,
                                          "least-squares slope of log kernel_movement on log N"),
        "particle_movement": variable(sd, move["particles"],
                                      "(mean_i |theta_i(T) - theta_i(0)|^2 / "
                                      "mean_i |theta_i(0)|^2)^(1/2)"),
        "particle_movement_slope": variable(("scaling",), p_slopes,
                                            "least-squares slope of log particle_movement on "
                                            "log N"),
        "loss_initial": variable(sd, move["loss0"], "training loss at the first step"),
        "loss_final": variable(sd, move["loss"], "training loss over the last window"),
    }
    coords = {"eta": ("eta", np.array(t.etas), {"long_name": "step size eta = alpha/N",
                                                 "units": "1"}),
              "scaling": list(SCALINGS),
              "N": ("N", np.array(t.n_particles), {"long_name": "number of particles N",
                                                   "units": "1"})}
    attrs = {"unit": "uv", "activation": t.activation, "n_particles": common.n_particles,
             "train_size": common.train_size, "identity_flow_time": t.identity_flow_time,
             "function_time": t.function_time, "mf_alpha": t.mf_alpha,
             "ntk_step": t.ntk_step, "mode": "full_batch", "scheme": SCHEME,
             "normalisation": "L = (1/n) sum |r|^2, flow time s = eta*step, "
                              "dL/ds = -(4/n^2) sum r^T K r, K = (1/N) sum_i J_i J_i^T",
             "precision": PRECISION}
    return xr.Dataset(data, coords=coords, attrs=attrs)
