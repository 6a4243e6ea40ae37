"""Angular momentum of full-batch gradient descent under augmentation (PAPER.md §9b, 3).

SO(2) rotating R^d about its last axis (§11), the ``uv`` unit, labels from the SI teacher (a
random cloud projected on E^G, so ``y(g x) = g y(x)`` for every rotation g).  Full-batch
gradient descent through the engine (vanilla, float64, step η, flow time s) from a generic
start, on three losses built from one fixed training set X of n points:

* raw: ``L = (1/n) Σ_{x∈X} ‖Φ(x) − y(x)‖²``;
* augmented by the C_K orbit: the same on ``{g x : g ∈ C_K, x ∈ X}`` (K = 1 is the raw set);
* population (orbit-averaged): each x replaced by its whole SO(2) orbit, the orbit integral
  taken by the ``population_points``-point rule.  The integrand is analytic and periodic in
  the angle, so that rule's error falls geometrically in the number of points; the study
  records |J| against K, which shows where it reaches rounding.

Along each trajectory ``J(t) = Σᵢ ⟨A θᵢ(t), ∇ᵢL(θ(t))⟩`` (:mod:`mfsym.measure.momentum`),
relative to its Cauchy–Schwarz scale ``Σᵢ |Aθᵢ| |∇ᵢL|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from ..core.compact import CompactGroup, RotationXY, compact_group
from ..core.teachers import Teacher, random_teacher
from ..core.units import make_unit
from ..measure.momentum import angular_momentum, loss_gradient, uv_generator
from ..records.results import variable
from .noether_base import (
    TEACHER,
    CommonSetting,
    _check,
    _count,
    _positive,
    _Problem,
    train_schemes,
    training_inputs,
)

SCHEME = "vanilla"
PRECISION = "float64 (J = 0 for an invariant loss is checked to rounding)"


@dataclass(frozen=True)
class MomentumSetting:
    """The angular-momentum study (module docstring).  orbit_points: the K of the augmented
    sets; population_points: points of the orbit-averaged loss; shown_points: the K whose
    J(t) is recorded; group_dim: d of SO(2) on R^d; activation: of the uv unit."""

    group_dim: int = 3
    activation: str = "sigmoid"
    orbit_points: tuple = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    population_points: int = 256
    shown_points: int = 4
    eta: float = 0.01
    flow_time: float = 2.0
    n_snapshots: int = 21

    def __post_init__(self):
        w = "momentum."
        pts = tuple(self.orbit_points)
        _check(bool(pts) and all(_count(k) for k in pts) and len(set(pts)) == len(pts)
               and list(pts) == sorted(pts), w, "orbit_points", list(pts),
               "a non-empty increasing list of distinct integers ≥ 1")
        object.__setattr__(self, "orbit_points", pts)
        _check(_count(self.group_dim, 2), w, "group_dim", self.group_dim, "an integer ≥ 2")
        _check(self.activation in ("sigmoid", "tanh"), w, "activation", self.activation,
               "allowed: ['sigmoid', 'tanh'] (a polynomial activation makes the C_K average "
               "exact from K = 3 on)")
        _check(_count(self.population_points) and self.population_points > pts[-1], w,
               "population_points", self.population_points,
               f"an integer larger than the largest orbit_points ({pts[-1]})")
        _check(self.shown_points in pts, w, "shown_points", self.shown_points,
               f"one of orbit_points {list(pts)}")
        for key in ("eta", "flow_time"):
            _check(_positive(getattr(self, key)), w, key, getattr(self, key), "a number > 0")
        _check(_count(self.n_snapshots, 2), w, "n_snapshots", self.n_snapshots,
               "an integer ≥ 2")


def orbit_inputs(compact: CompactGroup, x: np.ndarray, points: int) -> np.ndarray:
    """``{g x : g ∈ C_K}`` element-major, shape (K·n, d)."""
    mats = compact.xy.quadrature_xy(points).x
    return np.einsum("gij,nj->gni", mats, np.asarray(x, dtype=np.float64)).reshape(-1, x.shape[1])


def _setting(common: CommonSetting, m: MomentumSetting):
    unit = make_unit("uv", m.group_dim, m.group_dim, m.activation)
    compact = compact_group(unit, RotationXY("SO2", m.group_dim))
    group = compact.quadrature(1)  # the engine's group; only vanilla trains here
    rng = np.random.default_rng(common.teacher_seed)
    teacher = random_teacher(group, "SI", common.teacher_particles, rng, common.teacher_scale)
    return unit, compact, group, Teacher(TEACHER, teacher.particles)


def _trajectory(common, m: MomentumSetting, setting, x: np.ndarray, threads):
    """J(t) and its relative size along full-batch GD on the inputs ``x``."""
    unit, _, group, teacher = setting
    problem = _Problem(common, unit, group, {TEACHER: teacher}, x)
    res, i = train_schemes(problem, [SCHEME], "WI", x, threads=threads, eta=m.eta,
                           flow_time=m.flow_time, n_snapshots=m.n_snapshots,
                           keep_particle_snapshots=True)[SCHEME]
    with torch.no_grad():
        y = unit.per_particle(torch.as_tensor(teacher.particles, dtype=torch.float64),
                              torch.as_tensor(x, dtype=torch.float64)).mean(-2).numpy()
    loss, grad = loss_gradient(res.particle_snapshots[i], x, y, unit)
    j, scale = angular_momentum(res.particle_snapshots[i], grad, uv_generator(unit))
    return j, j / scale, loss, res.steps * m.eta


def momentum_study(common: CommonSetting, m: MomentumSetting,
                   threads: int | None = None) -> xr.Dataset:
    """|J| against K and J(t) for the raw, augmented and population losses.

    Variables: ``j_max`` / ``j_rel_max`` (K) = ``max_t |J(t)|`` and ``max_t |J|/scale`` on the
    C_K-augmented set; ``j`` / ``j_rel`` / ``loss`` (case, time) for the cases raw (K = 1),
    augmented (K = shown_points) and population; ``j_raw_max`` / ``j_rel_raw_max`` and
    ``j_population_max`` / ``j_rel_population_max``.
    """
    setting = _setting(common, m)
    compact = setting[1]
    x = training_inputs(common, m.group_dim)
    curves = {k: _trajectory(common, m, setting, orbit_inputs(compact, x, k), threads)
              for k in (*m.orbit_points, m.population_points)}
    ks = list(m.orbit_points)
    j_max = np.array([np.abs(curves[k][0]).max() for k in ks])
    j_rel = np.array([np.abs(curves[k][1]).max() for k in ks])
    cases = {"raw": 1, "augmented": m.shown_points, "population": m.population_points}
    if 1 not in curves:
        curves[1] = _trajectory(common, m, setting, x, threads)
    raw, pop = curves[1], curves[m.population_points]
    times = pop[3]
    stack = {name: np.stack([curves[k][idx] for k in cases.values()])
             for name, idx in (("j", 0), ("j_rel", 1), ("loss", 2))}
    dims = ("case", "time")
    data = {
        "j_max": variable(("K",), j_max, "max over time of |J|, J = sum_i <A theta_i, "
                                         "grad_i L>, loss on the C_K-augmented set"),
        "j_rel_max": variable(("K",), j_rel, "max over time of |J| / sum_i |A theta_i| "
                                             "|grad_i L| on the C_K-augmented set"),
        "j": variable(dims, stack["j"], "J = sum_i <A theta_i, grad_i L> along the path"),
        "j_rel": variable(dims, stack["j_rel"], "J / sum_i |A theta_i| |grad_i L|"),
        "loss": variable(dims, stack["loss"], "the case's own training loss"),
        "j_raw_max": variable((), np.abs(raw[0]).max(), "max over time of |J|, raw set"),
        "j_rel_raw_max": variable((), np.abs(raw[1]).max(),
                                  "max over time of relative |J|, raw set"),
        "j_population_max": variable((), np.abs(pop[0]).max(),
                                     "max over time of |J|, orbit-averaged loss"),
        "j_rel_population_max": variable((), np.abs(pop[1]).max(),
                                         "max over time of relative |J|, orbit-averaged loss"),
    }
    coords = {"K": ("K", np.array(ks), {"long_name": "points K of the orbit C_K", "units": "1"}),
              "case": list(cases),
              "case_points": ("case", np.array(list(cases.values())),
                              {"long_name": "orbit points of the case", "units": "1"}),
              "time": ("time", times, {"long_name": "flow time s = eta * step", "units": "1"})}
    attrs = {"group": f"SO2 on R^{m.group_dim}", "unit": "uv", "activation": m.activation,
             "teacher_kind": "SI", "n_particles": common.n_particles,
             "train_size": common.train_size, "eta": m.eta, "flow_time": m.flow_time,
             "population_points": m.population_points, "mode": "full_batch",
             "scheme": SCHEME, "precision": PRECISION}
    return xr.Dataset(data, coords=coords, attrs=attrs)
