"""The Noether studies (PAPER.md §9, §9b): grids of short trainings and their datasets.

Every training goes through :func:`mfsym.engine.training.train_stack` in float64.  The studies
are parametrised by the step size η and the flow time s rather than by (α, T): with N
particles the engine's step is ``η = α/N`` and its weight decay in ``z ← z − η(g + λz)``
form is ``λ = 2τ``, so a study asks for

    α = η N,   T = s / (η N)   (hence round(s/η) steps),   τ = λ / 2,

and its Langevin term is ``√(2αβ/N) ξ = √(2ηβ) ξ``.

Three studies, each returning an :class:`xarray.Dataset` ready for
:func:`mfsym.records.results.write_dataset`:

* :func:`drift_study` — charge drift ``max_i |Q_i(s) − Q_i(0)|`` against η per activation,
  training mode and scheme; the one-step identity's relative error; charges under weight
  decay against ``e^{−2λs} Q(0)``; drift against the temperature β.
* :func:`invariance_study` — distance to E^G over time from an SI start, and the orbit-
  pairing error from an orbit-paired start, per scheme and training mode.
* :func:`attraction_study` — distance to E^G and loss after training from a generic (WI)
  start, against the weight decay λ.

The rest of the second seed (§9b), one module each, registered here under the same entry
point (:func:`run_study`) and the same ``noether:`` section: ``balance``
(:mod:`mfsym.studies.balance`, balanced layers of the mlp unit and the linear ResNet),
``momentum`` (:mod:`mfsym.studies.momentum`, angular momentum under SO(2) augmentation),
``tangent`` (:mod:`mfsym.studies.tangent`, energy identity and tangent-kernel movement).

Schemes are the engine's plus ``DA-orbit`` (DA with the loss averaged over the orbit,
``da_mode="orbit"``; plain ``DA`` draws one g per sample).  Training modes: ``online``
(fresh samples every step, batch B), ``full_batch`` (gradient descent on a fixed training
set X), ``full_batch_symmetrized`` (gradient descent on X ∪ gX ∪ …).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..core.schemes import SCHEME_VARIANTS
from ..core.schemes import TRAINING_MODES as MODES
from ..core.teachers import TEACHER_KINDS
from ..core.units import ACTIVATIONS
from ..engine.run_inputs import initial_particles
from ..measure.noether import (
    charge_drift,
    charge_identity_error,
    charges,
    decayed_charges,
    gram_charge,
    loglog_slope,
    orbit_pairing_error,
)
from ..records.results import variable
from .balance import BalanceSetting, balance_study
from .momentum import MomentumSetting, momentum_study
from .noether_base import (  # noqa: F401  (re-exported: the studies' building blocks)
    TEACHER,
    CommonSetting,
    _build,
    _check,
    _check_training_block,
    _choices,
    _count,
    _flow_times,
    _mode_inputs,
    _nonneg,
    _numbers,
    _positive,
    _Problem,
    _problem,
    train_config,
    train_schemes,
)
from .tangent import TangentSetting, tangent_study

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftSetting:
    """The charge-drift study (see :func:`drift_study`); λ are weight decays, β temperatures."""

    unit: str = "uv"
    teacher_kind: str = "WI"
    activations: tuple = ("relu", "leaky_relu", "linear", "tanh")
    schemes: tuple = ("vanilla", "DA", "DA-orbit", "FA", "EA")
    modes: tuple = ("online", "full_batch")
    etas: tuple = (0.04, 0.02, 0.01, 0.005)
    flow_time: float = 2.0
    identity_eta: float = 0.05
    identity_weight_decay: float = 0.5
    decay_activation: str = "relu"
    decay_scheme: str = "vanilla"
    decay_eta: float = 0.005
    decay_lambdas: tuple = (0.1, 0.5)
    langevin_activation: str = "relu"
    langevin_scheme: str = "vanilla"
    langevin_eta: float = 0.005
    langevin_betas: tuple = (1e-5, 1e-4, 1e-3, 1e-2)

    def __post_init__(self):
        w = "drift."
        _check(self.unit == "uv", w, "unit", self.unit, "charges need the 'uv' unit")
        _check(self.teacher_kind in TEACHER_KINDS, w, "teacher_kind", self.teacher_kind,
               f"allowed: {list(TEACHER_KINDS)}")
        for key, allowed in (("activations", ACTIVATIONS), ("schemes", SCHEME_VARIANTS),
                             ("modes", MODES)):
            object.__setattr__(self, key, _choices(getattr(self, key), allowed, w, key))
        object.__setattr__(self, "etas", _numbers(self.etas, _positive, w, "etas", "> 0"))
        object.__setattr__(self, "decay_lambdas",
                           _numbers(self.decay_lambdas, _nonneg, w, "decay_lambdas", "≥ 0"))
        object.__setattr__(self, "langevin_betas",
                           _numbers(self.langevin_betas, _positive, w, "langevin_betas", "> 0"))
        for key in ("flow_time", "identity_eta", "decay_eta", "langevin_eta"):
            _check(_positive(getattr(self, key)), w, key, getattr(self, key), "a number > 0")
        _check(_nonneg(self.identity_weight_decay), w, "identity_weight_decay",
               self.identity_weight_decay, "a number ≥ 0")
        for key in ("decay_activation", "langevin_activation"):
            _check(getattr(self, key) in ACTIVATIONS, w, key, getattr(self, key),
                   f"allowed: {list(ACTIVATIONS)}")
        for key in ("decay_scheme", "langevin_scheme"):
            _check(getattr(self, key) in SCHEME_VARIANTS, w, key, getattr(self, key),
                   f"allowed: {list(SCHEME_VARIANTS)}")


@dataclass(frozen=True)
class InvarianceSetting:
    """The finite-N invariance study (see :func:`invariance_study`)."""

    unit: str = "uv"
    activation: str = "relu"
    teacher_kind: str = "WI"
    schemes: tuple = ("vanilla", "DA", "DA-orbit", "FA", "EA")
    modes: tuple = MODES
    eta: float = 0.01
    flow_time: float = 4.0
    beta: float = 0.0
    n_snapshots: int = 21

    def __post_init__(self):
        _check_training_block(self, "invariance.", ("WI", "SI"))
        object.__setattr__(self, "modes", _choices(self.modes, MODES, "invariance.", "modes"))


@dataclass(frozen=True)
class AttractionSetting:
    """The weight-decay attraction study (see :func:`attraction_study`)."""

    unit: str = "uv"
    activation: str = "relu"
    teacher_kind: str = "SI"
    schemes: tuple = ("vanilla",)
    mode: str = "online"
    lambdas: tuple = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
    eta: float = 0.01
    flow_time: float = 20.0
    beta: float = 0.0
    n_snapshots: int = 11

    def __post_init__(self):
        w = "attraction."
        _check_training_block(self, w, TEACHER_KINDS)
        _check(self.mode in MODES, w, "mode", self.mode, f"allowed: {list(MODES)}")
        object.__setattr__(self, "lambdas", _numbers(self.lambdas, _nonneg, w, "lambdas", "≥ 0"))


@dataclass(frozen=True)
class NoetherConfig:
    """The ``noether:`` configuration section: a common setting and one block per study."""

    common: CommonSetting
    drift: DriftSetting
    invariance: InvarianceSetting
    attraction: AttractionSetting
    balance: BalanceSetting
    momentum: MomentumSetting
    tangent: TangentSetting

    @classmethod
    def from_dict(cls, values: Mapping | None) -> NoetherConfig:
        """Validate a plain mapping; unknown keys raise naming them and the allowed ones."""
        values = dict(values or {})
        studies = {"drift": DriftSetting, "invariance": InvarianceSetting,
                   "attraction": AttractionSetting, "balance": BalanceSetting,
                   "momentum": MomentumSetting, "tangent": TangentSetting}
        common = {k: v for k, v in values.items() if k not in studies}
        return cls(
            common=_build(CommonSetting, common, ""),
            **{k: _build(c, values.get(k), f"{k}.") for k, c in studies.items()},
        )


# ---------------------------------------------------------------------------------------
# the charge-drift study
# ---------------------------------------------------------------------------------------
def _drift_grid(cfg: NoetherConfig, threads) -> dict:
    d = cfg.drift
    shape = (len(d.activations), len(d.modes), len(d.schemes), len(d.etas))
    drift, scale, gram = np.zeros(shape), np.zeros(shape[:3]), np.full(shape[1:], np.nan)
    for a, act in enumerate(d.activations):
        problem = _problem(cfg.common, d.unit, act, d.teacher_kind)
        for m, mode in enumerate(d.modes):
            for e, eta in enumerate(d.etas):
                trained = train_schemes(problem, d.schemes, "WI", _mode_inputs(problem, mode),
                                        threads=threads, eta=eta, flow_time=d.flow_time)
                for s, scheme in enumerate(d.schemes):
                    res, i = trained[scheme]
                    th0, th1 = res.initial_particles[i], res.final_particles[i]
                    q0 = charges(th0, problem.unit)
                    drift[a, m, s, e] = charge_drift(q0, charges(th1, problem.unit))
                    scale[a, m, s] = np.abs(q0).max()
                    if act == "linear":
                        c0, c1 = (gram_charge(t, problem.unit).ravel() for t in (th0, th1))
                        gram[m, s, e] = charge_drift(c0, c1)
    return {"drift": drift, "scale": scale, "gram": gram}


def _identity_errors(cfg: NoetherConfig, threads) -> np.ndarray:
    """One noiseless step per activation and scheme: relative error of the charge identity."""
    d = cfg.drift
    err = np.zeros((len(d.activations), len(d.schemes)))
    for a, act in enumerate(d.activations):
        problem = _problem(cfg.common, d.unit, act, d.teacher_kind)
        step = d.identity_eta
        trained = train_schemes(problem, d.schemes, "WI", threads=threads, eta=step,
                                flow_time=step, weight_decay=d.identity_weight_decay)
        for s, scheme in enumerate(d.schemes):
            res, i = trained[scheme]
            err[a, s] = charge_identity_error(res.initial_particles[i], res.final_particles[i],
                                              problem.unit, step, d.identity_weight_decay)
    return err


def _decay_charges(cfg: NoetherConfig, threads) -> dict:
    """Charges after a flow time s under each weight decay λ, and ``e^{−2λs} Q(0)``."""
    d = cfg.drift
    problem = _problem(cfg.common, d.unit, d.decay_activation, d.teacher_kind)
    q0, q1, qp = [], [], []
    for lam in d.decay_lambdas:
        res, i = train_schemes(problem, [d.decay_scheme], "WI", threads=threads,
                               eta=d.decay_eta, flow_time=d.flow_time, weight_decay=lam)[
            d.decay_scheme]
        s = _flow_times(res, d.decay_eta)[-1]
        q0.append(charges(res.initial_particles[i], problem.unit))
        q1.append(charges(res.final_particles[i], problem.unit))
        qp.append(decayed_charges(q0[-1], lam, s))
    return {"initial": np.array(q0), "final": np.array(q1), "decayed": np.array(qp)}


def _langevin_drift(cfg: NoetherConfig, threads) -> tuple[np.ndarray, float]:
    """Charge drift against β at one step size, and the noiseless drift at that step."""
    d = cfg.drift
    problem = _problem(cfg.common, d.unit, d.langevin_activation, d.teacher_kind)
    out = []
    for beta in (0.0, *d.langevin_betas):
        res, i = train_schemes(problem, [d.langevin_scheme], "WI", threads=threads,
                               eta=d.langevin_eta, flow_time=d.flow_time, beta=beta)[
            d.langevin_scheme]
        q0 = charges(res.initial_particles[i], problem.unit)
        out.append(charge_drift(q0, charges(res.final_particles[i], problem.unit)))
    return np.array(out[1:]), float(out[0])


def drift_study(config: Mapping | NoetherConfig, threads: int | None = None) -> xr.Dataset:
    """Charge drift of the uv unit against η, the one-step identity, weight decay, noise.

    Variables: ``charge_drift`` (activation, mode, scheme, eta) = ``max_i |Q_i(s) − Q_i(0)|``
    after flow time s from a generic start; ``charge_scale`` = ``max_i |Q_i(0)|``;
    ``drift_slope`` (activation, mode, scheme): fit of log drift on log η;
    ``gram_charge_drift`` (mode, scheme, eta): ``max_ij |ΔC_ij|`` for the linear unit (only if
    it is studied); ``identity_error`` (activation, scheme): the one-step identity's relative
    error; ``charge_initial`` / ``charge_final`` / ``charge_decayed`` (decay_lambda, particle);
    ``langevin_drift`` (beta) with its slope and the noiseless drift.
    """
    cfg = config if isinstance(config, NoetherConfig) else NoetherConfig.from_dict(config)
    d = cfg.drift
    grid = _drift_grid(cfg, threads)
    slopes = np.apply_along_axis(lambda y: loglog_slope(d.etas, y), -1, grid["drift"])
    identity = _identity_errors(cfg, threads)
    decay = _decay_charges(cfg, threads)
    langevin, noiseless = _langevin_drift(cfg, threads)
    dims = ("activation", "mode", "scheme", "eta")
    data = {
        "charge_drift": variable(dims, grid["drift"], "max over particles of |Q_i(s) - Q_i(0)|"),
        "charge_scale": variable(dims[:3], grid["scale"], "max over particles of |Q_i(0)|"),
        "drift_slope": variable(dims[:3], slopes, "least-squares slope of log drift on log eta"),
        "identity_error": variable(
            ("activation", "scheme"), identity,
            "relative error of the one-step identity Q <- (1-eta*lambda)^2 Q + "
            "eta^2 (|g_v|^2 - |g_u|^2)",
        ),
        "charge_initial": variable(("decay_lambda", "particle"), decay["initial"],
                                   "charge Q_i at s = 0"),
        "charge_final": variable(("decay_lambda", "particle"), decay["final"],
                                 "charge Q_i at the end of training"),
        "charge_decayed": variable(("decay_lambda", "particle"), decay["decayed"],
                                   "gradient-flow prediction exp(-2 lambda s) Q_i(0)"),
        "langevin_drift": variable(("beta",), langevin,
                                   "max over particles of |Q_i(s) - Q_i(0)| with noise"),
        "langevin_slope": variable((), loglog_slope(d.langevin_betas, langevin),
                                   "least-squares slope of log drift on log beta"),
        "noiseless_drift": variable((), noiseless, "charge drift at beta = 0, same step"),
    }
    if "linear" in d.activations:
        data["gram_charge_drift"] = variable(
            dims[1:], grid["gram"], "max over i, j of |C_ij(s) - C_ij(0)|, C = V V^T - U U^T "
            "(linear activation)")
    coords = {
        "activation": list(d.activations), "mode": list(d.modes), "scheme": list(d.schemes),
        "eta": ("eta", np.array(d.etas), {"long_name": "step size eta = alpha/N", "units": "1"}),
        "decay_lambda": ("decay_lambda", np.array(d.decay_lambdas),
                         {"long_name": "weight decay lambda = 2 tau", "units": "1"}),
        "particle": np.arange(cfg.common.n_particles),
        "beta": ("beta", np.array(d.langevin_betas),
                 {"long_name": "Langevin temperature beta", "units": "1"}),
    }
    attrs = {"flow_time": d.flow_time, "teacher_kind": d.teacher_kind,
             "decay_activation": d.decay_activation,
             "decay_scheme": d.decay_scheme, "decay_eta": d.decay_eta,
             "langevin_activation": d.langevin_activation, "langevin_scheme": d.langevin_scheme,
             "langevin_eta": d.langevin_eta, "n_particles": cfg.common.n_particles}
    return xr.Dataset(data, coords=coords, attrs=attrs)


# ---------------------------------------------------------------------------------------
# the finite-N invariance study
# ---------------------------------------------------------------------------------------
def paired_start(problem: _Problem) -> np.ndarray:
    """An orbit-paired generic cloud of N atoms: ``group.symmetrize`` of N/|G| WI atoms."""
    common, group = problem.common, problem.group
    if common.n_particles % group.order:
        raise ValueError(
            f"an orbit-paired start needs N divisible by |G| = {group.order}, "
            f"got noether.n_particles = {common.n_particles}"
        )
    base = initial_particles(group, common.n_particles // group.order, common.seed, "WI",
                             common.init_std)
    return group.symmetrize(base)


def invariance_study(config: Mapping | NoetherConfig, threads: int | None = None) -> xr.Dataset:
    """Distance to E^G from an SI start and orbit-pairing error, per scheme and mode.

    Variables (scheme, mode, time): ``dist_fixed`` = ``(mean_i ‖θ_i − P_E θ_i‖²)^{1/2}`` from
    the SI start; ``pairing_error`` = :func:`mfsym.measure.noether.orbit_pairing_error` from an
    orbit-paired generic start; (scheme, mode): ``population_risk`` at the end (SI start).
    ``time`` is the flow time s = η · step.
    """
    cfg = config if isinstance(config, NoetherConfig) else NoetherConfig.from_dict(config)
    v = cfg.invariance
    problem = _problem(cfg.common, v.unit, v.activation, v.teacher_kind)
    kw = {"eta": v.eta, "flow_time": v.flow_time, "beta": v.beta, "n_snapshots": v.n_snapshots,
          "threads": threads}
    shape = (len(v.schemes), len(v.modes), v.n_snapshots)
    dist, pairing, risk = np.zeros(shape), np.zeros(shape), np.zeros(shape[:2])
    start = paired_start(problem)
    times = None
    for m, mode in enumerate(v.modes):
        x_train = _mode_inputs(problem, mode)
        si = train_schemes(problem, v.schemes, "SI", x_train, **kw)
        paired = train_schemes(problem, v.schemes, "WI", x_train, start,
                               keep_particle_snapshots=True, **kw)
        for s, scheme in enumerate(v.schemes):
            res, i = si[scheme]
            times = _flow_times(res, v.eta)
            dist[s, m] = res.dist_fixed[i]
            risk[s, m] = res.population_risk[i, -1]
            res_p, j = paired[scheme]
            pairing[s, m] = orbit_pairing_error(res_p.particle_snapshots[j], problem.group)
    dims = ("scheme", "mode", "time")
    data = {
        "dist_fixed": variable(dims, dist, "RMS distance of the particles to E^G (SI start)"),
        "pairing_error": variable(dims, pairing, "orbit-pairing error (orbit-paired start)"),
        "population_risk": variable(dims[:2], risk, "population risk at the end (SI start)"),
    }
    coords = {"scheme": list(v.schemes), "mode": list(v.modes),
              "time": ("time", times, {"long_name": "flow time s = eta * step", "units": "1"})}
    attrs = {"unit": v.unit, "activation": v.activation, "teacher_kind": v.teacher_kind,
             "eta": v.eta, "beta": v.beta,
             "n_particles": cfg.common.n_particles, "group": cfg.common.group}
    return xr.Dataset(data, coords=coords, attrs=attrs)


# ---------------------------------------------------------------------------------------
# the weight-decay attraction study
# ---------------------------------------------------------------------------------------
def attraction_study(config: Mapping | NoetherConfig, threads: int | None = None) -> xr.Dataset:
    """Distance to E^G and loss against weight decay λ from a generic (WI) start.

    Variables (decay_lambda, scheme, time): ``dist_fixed`` (RMS distance to E^G),
    ``rmd_projected`` (RMD(ν, P_E#ν)), ``population_risk``; (decay_lambda, scheme):
    ``train_loss`` over the last snapshot window.
    """
    cfg = config if isinstance(config, NoetherConfig) else NoetherConfig.from_dict(config)
    a = cfg.attraction
    problem = _problem(cfg.common, a.unit, a.activation, a.teacher_kind)
    shape = (len(a.lambdas), len(a.schemes), a.n_snapshots)
    dist, rmd, risk, loss = np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape[:2])
    times = None
    for k, lam in enumerate(a.lambdas):
        trained = train_schemes(problem, a.schemes, "WI", _mode_inputs(problem, a.mode),
                                threads=threads, eta=a.eta, flow_time=a.flow_time,
                                weight_decay=lam, beta=a.beta, n_snapshots=a.n_snapshots)
        for s, scheme in enumerate(a.schemes):
            res, i = trained[scheme]
            times = _flow_times(res, a.eta)
            dist[k, s], rmd[k, s] = res.dist_fixed[i], res.rmd_projected[i]
            risk[k, s], loss[k, s] = res.population_risk[i], res.train_loss[i, -1]
    dims = ("decay_lambda", "scheme", "time")
    data = {
        "dist_fixed": variable(dims, dist, "RMS distance of the particles to E^G"),
        "rmd_projected": variable(dims, rmd, "RMD between the cloud and its projection on E^G"),
        "population_risk": variable(dims, risk, "population risk"),
        "train_loss": variable(dims[:2], loss, "training loss over the last snapshot window"),
    }
    coords = {
        "decay_lambda": ("decay_lambda", np.array(a.lambdas),
                         {"long_name": "weight decay lambda = 2 tau", "units": "1"}),
        "scheme": list(a.schemes),
        "time": ("time", times, {"long_name": "flow time s = eta * step", "units": "1"}),
    }
    attrs = {"unit": a.unit, "activation": a.activation, "teacher_kind": a.teacher_kind,
             "mode": a.mode, "eta": a.eta,
             "beta": a.beta, "n_particles": cfg.common.n_particles}
    return xr.Dataset(data, coords=coords, attrs=attrs)


# ---------------------------------------------------------------------------------------
# one entry point for the pipeline
# ---------------------------------------------------------------------------------------
def _seed_study(study, block: str):
    """A study of the second seed's consequences (§9b) on the ``noether:`` section; refuses
    a dataset with a non-finite value rather than writing it."""

    def run(config: Mapping | NoetherConfig, threads: int | None = None) -> xr.Dataset:
        cfg = config if isinstance(config, NoetherConfig) else NoetherConfig.from_dict(config)
        log.info("Noether study %s: every training and identity in float64, so that exact "
                 "identities are compared to rounding", block)
        ds = study(cfg.common, getattr(cfg, block), threads=threads)
        bad = [name for name, v in ds.data_vars.items()
               if v.dtype.kind == "f" and not np.isfinite(v.values).all()]
        if bad:
            raise FloatingPointError(f"Noether study {block!r}: non-finite values in {bad}; "
                                     "nothing written")
        return ds

    return run


#: Study name → (function, dataset title).
STUDIES = {
    "drift": (drift_study, "Noether charge drift of the uv unit against the step size"),
    "invariance": (invariance_study, "Finite-N invariance of E^G and of orbit pairings"),
    "attraction": (attraction_study, "Weight-decay attraction towards E^G"),
    "balance": (_seed_study(balance_study, "balance"),
                "Balanced layers of the mlp unit and of the linear mean-ODE ResNet"),
    "momentum": (_seed_study(momentum_study, "momentum"),
                 "Angular momentum of full-batch gradient descent under SO(2) augmentation"),
    "tangent": (_seed_study(tangent_study, "tangent"),
                "Energy identity and tangent-kernel movement, mean-field against NTK scaling"),
}


def run_study(name: str, config: Mapping | NoetherConfig, threads: int | None = None):
    """Run study ``name`` on the ``noether:`` section; returns ``(dataset, title)``."""
    if name not in STUDIES:
        raise ValueError(f"unknown Noether study {name!r}; allowed: {sorted(STUDIES)}")
    study, title = STUDIES[name]
    return study(config, threads=threads), title
