"""Building blocks shared by the Noether studies (PAPER.md §9, §9b).

Validation helpers of the ``noether:`` configuration section, the common setting of the
studies, and the one way they train: :func:`train_config` turns a step size η and a flow
time s into the engine's (α, T) — with N particles ``α = η N``, ``T = s / (η N)`` (round(s/η)
steps), ``τ = λ / 2`` — and :func:`train_schemes` trains schemes through
:func:`mfsym.engine.training.train_stack` in float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..core.groups import FiniteGroup, group_xy
from ..core.schemes import SCHEME_VARIANTS
from ..core.settings import build_strict
from ..core.teachers import Teacher, random_teacher
from ..core.units import ACTIVATIONS, UNITS, Unit, make_unit
from ..engine.training import RunSpec, TrainConfig, train_stack
from ..measure.noether import symmetrized_inputs

TEACHER = "teacher"


# ---------------------------------------------------------------------------------------
# configuration (plain mappings in, validated dataclasses out)
# ---------------------------------------------------------------------------------------
def _check(cond: bool, where: str, key: str, value, allowed: str) -> None:
    if not cond:
        raise ValueError(f"noether.{where}{key} = {value!r} is invalid; {allowed}")


def _positive(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) and v > 0


def _nonneg(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) and v >= 0


def _count(v, least: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _choices(values, allowed, where, key) -> tuple:
    vals = tuple(values)
    bad = [v for v in vals if v not in allowed]
    _check(bool(vals) and not bad and len(set(vals)) == len(vals), where, key, list(vals),
           f"a non-empty list without repeats from {list(allowed)}")
    return vals


def _numbers(values, test, where, key, what) -> tuple:
    vals = tuple(values)
    _check(bool(vals) and all(test(v) for v in vals) and len(set(vals)) == len(vals),
           where, key, list(vals), f"a non-empty list of distinct numbers {what}")
    return tuple(float(v) for v in vals)


def _build(cls, values: Mapping | None, where: str):
    return build_strict(
        cls, values, f"unknown key(s) {{unknown}} in noether.{where}; allowed: {{allowed}}"
    )


@dataclass(frozen=True)
class CommonSetting:
    """Shared setting of the studies: group, sizes, data and the random teacher cloud.

    group / group_dim: the group on X = Y = R^group_dim; n_particles: N; seed: the run seed
    (initial particles, samples); init_std: std of the generic initial particles; input_std:
    σ of x ~ N(0, σ²I); batch_size: B of online SGD; train_size / train_seed: the fixed
    training set of full-batch modes; teacher_particles / teacher_scale / teacher_seed: the
    teacher ``random_teacher(G, kind, …)`` (each study names its kind); leaky_slope: of
    leaky_relu; n_eval: Monte-Carlo samples of the population risk; device: engine device.
    """

    group: str = "C2"
    group_dim: int = 2
    n_particles: int = 16
    seed: int = 0
    init_std: float = 0.5
    input_std: float = 4.0
    batch_size: int = 20
    train_size: int = 16
    train_seed: int = 1
    teacher_particles: int = 3
    teacher_scale: float = 1.0
    teacher_seed: int = 2
    leaky_slope: float = 0.1
    n_eval: int = 512
    device: str = "cpu"

    def __post_init__(self):
        for key in ("group_dim", "n_particles", "batch_size", "train_size", "teacher_particles",
                    "n_eval"):
            _check(_count(getattr(self, key)), "", key, getattr(self, key), "an integer ≥ 1")
        for key in ("seed", "train_seed", "teacher_seed"):
            _check(_count(getattr(self, key), 0), "", key, getattr(self, key), "an integer ≥ 0")
        for key in ("init_std", "input_std", "teacher_scale", "leaky_slope"):
            _check(_positive(getattr(self, key)), "", key, getattr(self, key), "a number > 0")


def _check_training_block(block, where: str, kinds) -> None:
    """Checks shared by the invariance and attraction blocks (normalises ``schemes``)."""
    _check(block.unit in UNITS, where, "unit", block.unit, f"allowed: {list(UNITS)}")
    _check(block.activation in ACTIVATIONS, where, "activation", block.activation,
           f"allowed: {list(ACTIVATIONS)}")
    _check(block.teacher_kind in kinds, where, "teacher_kind", block.teacher_kind,
           f"allowed: {list(kinds)}")
    object.__setattr__(block, "schemes", _choices(block.schemes, SCHEME_VARIANTS, where,
                                                  "schemes"))
    for key in ("eta", "flow_time"):
        _check(_positive(getattr(block, key)), where, key, getattr(block, key), "a number > 0")
    _check(_nonneg(block.beta), where, "beta", block.beta, "a number ≥ 0")
    _check(_count(block.n_snapshots, 2), where, "n_snapshots", block.n_snapshots,
           "an integer ≥ 2")


# ---------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Problem:
    """Unit, group, teacher and fixed training set of one study."""

    common: CommonSetting
    unit: Unit
    group: FiniteGroup
    teachers: dict
    x_train: np.ndarray


def training_inputs(common: CommonSetting, dim: int) -> np.ndarray:
    """The fixed training set of the full-batch modes: ``train_size`` draws of
    ``x ~ N(0, input_std² I_dim)`` from ``train_seed``, shape (train_size, dim)."""
    rng = np.random.default_rng(common.train_seed)
    return common.input_std * rng.standard_normal((common.train_size, dim))


def _problem(common: CommonSetting, unit_name: str, activation: str, kind: str) -> _Problem:
    d = common.group_dim
    unit = make_unit(unit_name, d, d, activation, common.leaky_slope)
    group = unit.group(group_xy(common.group, d))
    rng = np.random.default_rng(common.teacher_seed)
    teacher = random_teacher(group, kind, common.teacher_particles, rng, common.teacher_scale)
    x_train = training_inputs(common, group.dim_x)
    return _Problem(common, unit, group, {TEACHER: Teacher(TEACHER, teacher.particles)}, x_train)


def _mode_inputs(problem: _Problem, mode: str) -> np.ndarray | None:
    if mode == "online":
        return None
    if mode == "full_batch":
        return problem.x_train
    return symmetrized_inputs(problem.x_train, problem.group)


def train_config(
    common: CommonSetting, eta: float, flow_time: float, weight_decay: float = 0.0,
    beta: float = 0.0, da_mode: str = "random", n_snapshots: int = 2,
    keep_particle_snapshots: bool = False,
) -> TrainConfig:
    """Engine configuration for step η, flow time s, weight decay λ and temperature β.

    ``alpha = η N``, ``T = s / (η N)``, ``tau = λ / 2``; float64, linear snapshots.
    """
    n = common.n_particles
    return TrainConfig(
        alpha=eta * n, T=flow_time / (eta * n), tau=weight_decay / 2.0, beta=beta,
        batch_size=common.batch_size, input_std=common.input_std, init_std=common.init_std,
        da_mode=da_mode, n_snapshots=n_snapshots, snapshot_spacing="linear",
        n_eval=common.n_eval, keep_particle_snapshots=keep_particle_snapshots,
        dtype="float64", device=common.device,
    )


def train_schemes(
    problem: _Problem, schemes, init: str, x_train=None, init_cloud=None, threads=None,
    **config,
) -> dict:
    """Train every study scheme from the same start; returns scheme → (StackResult, row).

    Schemes sharing a DA mode train as one stack; ``init_cloud`` (N, D) replaces the
    engine's initial particles; ``config`` goes to :func:`train_config`.
    """
    common = problem.common
    out = {}
    for mode in ("random", "orbit"):
        names = [s for s in schemes if SCHEME_VARIANTS[s][1] == mode]
        if not names:
            continue
        runs = [RunSpec(TEACHER, SCHEME_VARIANTS[s][0], common.seed) for s in names]
        res = train_stack(
            problem.group, problem.unit, problem.teachers, runs, common.n_particles, init,
            train_config(common, da_mode=mode, **config),
            init_particles=None if init_cloud is None else {common.seed: init_cloud},
            x_train=x_train, threads=threads, label=f"noether {init} {','.join(names)}",
        )
        out.update({s: (res, i) for i, s in enumerate(names)})
    return out


def _flow_times(res, eta: float) -> np.ndarray:
    return res.steps * eta
