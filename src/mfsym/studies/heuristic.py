"""Discovery of the largest subspace supporting SI laws (PAPER.md §7).

Symmetric data (a WI or SI teacher, so the target is G-equivariant), free (vanilla)
training.  Starting from a subspace E₀ ⊂ Z = R^D (default {0}), step j does:

1. *Initialise on E_j*: ``θᵢ(0) = P_j θᵢ⁰`` where ``θᵢ⁰`` is the i.i.d. ``N(0, s²)`` (WI)
   draw of the seed and ``P_j = B_j B_jᵀ`` the orthogonal projector onto E_j
   (``B_j``: (D, k_j) orthonormal columns; ``k_j = 0`` gives ``P_j = 0``).
2. *Train freely* with :func:`mfsym.engine.training.train_stack` (scheme vanilla, ``init="SI"``,
   ``subspace=P_j``): the Langevin noise is projected on E_j, so only the drift can leave it.
3. *Measure* ``r_j = RMD(ν, (P_j)#ν)`` by the closed form ``W₂² = mean_i ‖θᵢ − P_j θᵢ‖²``
   (``z ↦ P_j z`` is the gradient of a convex function, hence optimal by Brenier) and
   ``s_j = RMD(ν, ν^G)`` by exact optimal transport.
4. *Stop* if ``r_j ≤ d_j``: the particles stayed on E_j, which is the answer.  Otherwise
   *enlarge*: with ``R = Θ (I − P_j)`` (N, D) the trained particles' components orthogonal
   to E_j and ``R = U diag(σ₁ ≥ σ₂ ≥ …) Vᵀ`` its SVD, keep the right singular vectors
   ``v_k`` with ``σ_k ≥ tol·σ₁`` (``relative_singular_value``) or
   ``σ_k² ≥ tol·Σ_l σ_l²`` (``explained_variance``) and set
   ``E_{j+1} = E_j ⊕ span{v_k}``.  The SVD is *uncentred* (second moment, not covariance)
   because a cloud that moved as one atom (E₀ = {0}, below) has zero covariance but one
   clear direction: the one it moved into.

Why it should find E^G (the mean-field picture).  With symmetric data the mean-field
velocity field of an SI law is equivariant, and at a fixed point z ∈ E^G it lies in E^G:
E^G (and no larger subspace in general) carries SI laws to SI laws.  A proper subspace
E_j ⊊ E^G carries no such guarantee, and the drift generically leaves it, inside E^G.

What happens for C₂ and the matrix unit (dim Z = 4, dim E^G = 2):

* j = 0, E₀ = {0}: every particle starts at 0 and the projected noise is 0, so all
  particles receive the same update at every step (same minibatch, same position) and
  the cloud stays a single atom δ_p.  The drift at 0 is not zero (σ'(0) = 1/4, so the
  force is ``E[2(Φ − y)·¼·xᵀ]``) and lies in E^G, so p moves into E^G; its distance from
  E^G is only the minibatch fluctuation.  Whenever p ≠ 0, ``r_0 = 1/√2`` exactly
  (W₂² = ‖p‖², M₂(δ_p) + M₂(δ_0) = 2‖p‖²).  The residual R = 1·pᵀ has rank one:
  E₁ = span{p}, a line in E^G (up to that fluctuation).
* j = 1, E₁ a line: the particles are spread along the line, no law on a line fits the
  teacher, and the drift opens the cloud up inside E^G: R has one dominant singular
  direction (the rest of E^G) and small ones from the finite-N fluctuations out of E^G.
  E₂ = E^G, dimension 2.
* j = 2, E₂ = E^G: SI laws are preserved, the cloud stays on E₂ up to fluctuations,
  r_2 ≤ d_2: stop.

Finite N.  For an SI cloud (every particle on E^G) the *population* force is equivariant
for every N, so in this engine the only thing that pushes such a cloud off E^G is the
minibatch sampling of x: its size is of order ``α·sqrt(T/(N·B))`` (step α/N, N·T steps,
batch B), the "O(1/√N)" fluctuation of the mean-field limit.  Where the SI configuration
is unstable (the line E₁ early on, or E^G itself when SI laws cannot fit the teacher)
these fluctuations are amplified exponentially in time, so N·B must be large enough and T
not much longer than the time the drift needs to leave E_j.  N, T, the batch size, d_j and
the tolerance are all configuration values.

Shapes: clouds (N, D); bases (D, k) with orthonormal columns; projectors (D, D).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy.linalg import subspace_angles

from ..core.groups import FiniteGroup
from ..core.settings import build_strict
from ..core.teachers import Teacher
from ..core.units import Unit
from ..engine.run_inputs import initial_particles
from ..engine.training import RunSpec, TrainConfig, train_stack
from ..measure.transport import rmd_to_projected, rmd_to_symmetrized
from ..records.results import variable

CRITERIA = ("relative_singular_value", "explained_variance")
#: Teachers with symmetric data (the heuristic's premise).
SYMMETRIC_TEACHERS = ("WI", "SI")
#: Step status codes (CF flag variable ``status``); 0 marks a step that was not run.
STATUS = {"not_run": 0, "enlarged": 1, "converged": 2, "no_new_direction": 3, "max_steps": 4}
#: Keys of the ``heuristic`` config section that are not :class:`HeuristicConfig` fields.
PIPELINE_KEYS = ("training", "settings", "resources")
#: Singular values below this fraction of the largest are numerical zeros.
RANK_RTOL = 1e-10


class HeuristicError(ValueError):
    """Invalid input of the heuristic (the message names the bad value and what is allowed)."""


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeuristicConfig:
    """Settings of the discovery loop (the training itself is a :class:`TrainConfig`).

    N: particles; seed: the seed of the initial draw and of the random stream;
    thresholds: d_j per step (the last value repeats for later steps), each in [0, 1];
    tolerance: the direction-selection tolerance in (0, 1] (see ``criterion``);
    criterion: ``relative_singular_value`` (σ_k ≥ tol·σ₁) or ``explained_variance``
    (σ_k² ≥ tol·Σσ²); max_steps: the number of steps after which the loop stops anyway.
    """

    N: int = 300
    seed: int = 0
    thresholds: tuple[float, ...] = (0.05,)
    tolerance: float = 0.2
    criterion: str = "relative_singular_value"
    max_steps: int = 4

    def __post_init__(self):
        th = self.thresholds
        th = (th,) if isinstance(th, int | float) else tuple(th)
        object.__setattr__(self, "thresholds", th)
        if not (_int(self.N) and self.N >= 1):
            raise HeuristicError(f"heuristic.N = {self.N!r} is invalid; must be an integer ≥ 1")
        if not (_int(self.seed) and self.seed >= 0):
            raise HeuristicError(f"heuristic.seed = {self.seed!r} is invalid; must be ≥ 0")
        if not th or not all(_num(d) and 0.0 <= d <= 1.0 for d in th):
            raise HeuristicError(
                f"heuristic.thresholds = {self.thresholds!r} is invalid; must be a number or "
                "a non-empty list of numbers in [0, 1] (RMD lies in [0, 1])"
            )
        if not (_num(self.tolerance) and 0.0 < self.tolerance <= 1.0):
            raise HeuristicError(
                f"heuristic.tolerance = {self.tolerance!r} is invalid; must be in (0, 1]"
            )
        if self.criterion not in CRITERIA:
            raise HeuristicError(
                f"heuristic.criterion = {self.criterion!r} is invalid; allowed: {list(CRITERIA)}"
            )
        if not (_int(self.max_steps) and self.max_steps >= 1):
            raise HeuristicError(
                f"heuristic.max_steps = {self.max_steps!r} is invalid; must be an integer ≥ 1"
            )

    @classmethod
    def from_dict(cls, values: Mapping) -> HeuristicConfig:
        """Build from plain values; an unknown key raises naming it and the allowed keys."""
        return build_strict(
            cls, values, "unknown heuristic key(s) {unknown}; allowed: {allowed}", HeuristicError
        )

    def threshold(self, step: int) -> float:
        """d_j: the j-th threshold, the last one for every later step."""
        return float(self.thresholds[min(int(step), len(self.thresholds) - 1)])


def _int(v) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, int | float | np.number) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True, eq=False)
class Problem:
    """What the heuristic is run on: a group, a unit and a teacher with symmetric data."""

    name: str
    group: FiniteGroup
    unit: Unit
    teacher: Teacher

    def __post_init__(self):
        if self.group.dim_z != self.unit.dim_z:
            raise HeuristicError(
                f"setting {self.name!r}: the group acts on D={self.group.dim_z} but the unit "
                f"has D={self.unit.dim_z}"
            )
        if self.teacher.name not in SYMMETRIC_TEACHERS:
            raise HeuristicError(
                f"setting {self.name!r}: teacher {self.teacher.name!r} does not give symmetric "
                f"data; allowed: {list(SYMMETRIC_TEACHERS)}"
            )
        if self.teacher.particles.shape[1] != self.group.dim_z:
            raise HeuristicError(
                f"setting {self.name!r}: teacher particles have size "
                f"{self.teacher.particles.shape[1]}, the unit needs D={self.group.dim_z}"
            )


# ---------------------------------------------------------------------------------------
# linear algebra of subspaces
# ---------------------------------------------------------------------------------------
def orthonormal_basis(vectors, dim: int) -> np.ndarray:
    """Orthonormal basis (D, k) of the span of ``vectors`` ((k, D) rows; empty: {0}).

    Raises :class:`HeuristicError` if a vector has the wrong length, is not finite, or the
    vectors are linearly dependent (the basis would silently lose a direction).
    """
    arr = np.asarray(vectors, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((dim, 0))
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise HeuristicError(
            f"a start basis must be a list of vectors of length D={dim}, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise HeuristicError("the start basis contains non-finite entries")
    u, s, _ = np.linalg.svd(arr.T, full_matrices=False)
    if s[-1] <= RANK_RTOL * max(s[0], 1e-300) or arr.shape[0] > dim:
        raise HeuristicError(
            f"the {arr.shape[0]} start vectors are linearly dependent (singular values "
            f"{np.round(s, 12).tolist()}); give a basis"
        )
    return u


def projector(basis: np.ndarray) -> np.ndarray:
    """Orthogonal projector ``P = B Bᵀ`` (D, D) onto the span of the orthonormal columns of B."""
    b = np.asarray(basis, dtype=np.float64)
    return b @ b.T


def principal_directions(
    cloud: np.ndarray, basis: np.ndarray, tolerance: float, criterion: str
) -> tuple[np.ndarray, np.ndarray]:
    """Directions the cloud occupies outside span(B): ``(V_kept (D, m), σ (D,))``.

    ``R = Θ (I − B Bᵀ)`` (N, D), ``R = U diag(σ) Vᵀ`` (uncentred SVD, σ padded with zeros to
    length D); column k of Vᵀ is kept when ``σ_k ≥ tol·σ₁`` (relative singular value) or
    ``σ_k² ≥ tol·Σσ²`` (explained variance).  Singular values at the rounding level of
    ``Θ P`` (≤ ``RANK_RTOL·‖Θ‖_F``) are set to zero and never kept.
    """
    if criterion not in CRITERIA:
        raise HeuristicError(f"unknown criterion {criterion!r}; allowed: {list(CRITERIA)}")
    theta = np.asarray(cloud, dtype=np.float64)
    resid = theta - theta @ projector(basis)
    _, sig, vt = np.linalg.svd(resid, full_matrices=False)
    dim = theta.shape[1]
    zero = RANK_RTOL * np.linalg.norm(theta)  # rounding of Θ P, relative to the cloud
    sig = np.where(sig > zero, sig, 0.0)
    padded = np.zeros(dim)
    padded[: sig.size] = sig
    if sig.size == 0 or sig[0] == 0.0:
        return np.zeros((dim, 0)), padded
    if criterion == "relative_singular_value":
        keep = sig >= tolerance * sig[0]
    else:
        keep = sig**2 >= tolerance * np.sum(sig**2)
    keep &= sig > 0.0
    return vt[keep].T, padded


def enlarge(basis: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Orthonormal basis of ``span(B) ⊕ span(V)``: B's columns first, then V orthogonalised."""
    b = np.asarray(basis, dtype=np.float64)
    v = np.asarray(directions, dtype=np.float64)
    if v.shape[1] == 0:
        return b.copy()
    scale = np.linalg.norm(v, axis=0).max()
    v = v - b @ (b.T @ v)
    q, r = np.linalg.qr(v)
    keep = np.abs(np.diag(r)) > RANK_RTOL * scale  # drop directions already in span(B)
    return np.concatenate([b, q[:, keep]], axis=1)


def angles_to(basis: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between span(B) and span(target), one per target
    direction: the ``min(k, m)`` angles of :func:`scipy.linalg.subspace_angles`, then π/2
    for every target direction left without a partner (k < m)."""
    m = target.shape[1]
    out = np.full(m, np.pi / 2)
    if basis.shape[1] and m:
        ang = np.sort(subspace_angles(basis, target))
        out[: ang.size] = ang
    return out


# ---------------------------------------------------------------------------------------
# one step and the loop
# ---------------------------------------------------------------------------------------
@dataclass
class Step:
    """One step j: E_j, the training from E_j, its metrics and the decision.

    basis (D, k_j); initial, trained (N, D); singular_values (D,) of the residual;
    new_directions (D, m); next_basis (D, k_j + m); status: a key of :data:`STATUS`.
    """

    index: int
    basis: np.ndarray
    initial: np.ndarray
    trained: np.ndarray
    rmd_projected: float
    rmd_symmetrized: float
    rmd_fixed: float
    population_risk: float
    threshold: float
    singular_values: np.ndarray
    new_directions: np.ndarray
    next_basis: np.ndarray
    status: str


def initial_on_subspace(
    group: FiniteGroup, n_particles: int, seed: int, basis: np.ndarray, init_std: float
) -> np.ndarray:
    """``P_j θ⁰``: the seed's WI draw (:func:`mfsym.engine.run_inputs.initial_particles`) on E_j."""
    return initial_particles(group, n_particles, seed, "WI", init_std) @ projector(basis)


def decide(
    step: int, rmd: float, threshold: float, n_new: int, max_steps: int, stayed: bool = False
) -> str:
    """The status of step j: converged (r_j ≤ d_j, or ``stayed``: the residual outside E_j
    is at rounding level), no_new_direction, max_steps or enlarged."""
    if rmd <= threshold or stayed:
        return "converged"
    if n_new == 0:
        return "no_new_direction"
    if step >= max_steps - 1:
        return "max_steps"
    return "enlarged"


def run_step(
    problem: Problem,
    basis: np.ndarray,
    step: int,
    config: HeuristicConfig,
    training: TrainConfig,
    threads: int | None = None,
) -> Step:
    """Step j of the loop from ``basis`` = B_j (see the module docstring)."""
    group = problem.group
    basis = np.asarray(basis, dtype=np.float64).reshape(group.dim_z, -1)
    p = projector(basis)
    init = initial_on_subspace(group, config.N, config.seed, basis, training.init_std)
    res = train_stack(
        group, problem.unit, {problem.teacher.name: problem.teacher},
        [RunSpec(problem.teacher.name, "vanilla", config.seed)], config.N, "SI", training,
        init_particles={config.seed: init}, subspace=p, threads=threads,
        label=f"heuristic {problem.name} step {step} (dim E_j = {basis.shape[1]})",
    )
    trained = res.final_particles[0]
    rmd = rmd_to_projected(trained, p)
    new, sig = principal_directions(trained, basis, config.tolerance, config.criterion)
    threshold = config.threshold(step)
    status = decide(step, rmd, threshold, new.shape[1], config.max_steps, not sig.any())
    if status == "converged":
        new = np.zeros((group.dim_z, 0))
    return Step(
        index=int(step), basis=basis, initial=init, trained=trained, rmd_projected=rmd,
        rmd_symmetrized=rmd_to_symmetrized(trained, group),
        rmd_fixed=rmd_to_projected(trained, group.reynolds()),
        population_risk=float(res.population_risk[0, -1]), threshold=threshold,
        singular_values=sig, new_directions=new, next_basis=enlarge(basis, new), status=status,
    )


@dataclass
class Discovery:
    """The whole loop: its steps, the answer E_final (the last trained E_j) and E^G."""

    problem: Problem
    steps: list[Step]

    @property
    def final_basis(self) -> np.ndarray:
        return self.steps[-1].basis

    @property
    def recovered_dim(self) -> int:
        return int(self.final_basis.shape[1])

    @property
    def angles(self) -> np.ndarray:
        """Principal angles (rad) between the recovered subspace and E^G (:func:`angles_to`)."""
        return angles_to(self.final_basis, self.problem.group.fixed_basis())


def discover_subspace(
    problem: Problem,
    config: HeuristicConfig,
    training: TrainConfig,
    start=None,
    threads: int | None = None,
) -> Discovery:
    """Run steps j = 0, 1, … until one stops (converged, no new direction, max_steps).

    ``start``: vectors spanning E₀ ((k, D) rows), default none, i.e. E₀ = {0}.
    """
    basis = orthonormal_basis([] if start is None else start, problem.group.dim_z)
    steps = []
    for j in range(config.max_steps):
        steps.append(run_step(problem, basis, j, config, training, threads))
        if steps[-1].status != "enlarged":
            break
        basis = steps[-1].next_basis
    return Discovery(problem, steps)


# ---------------------------------------------------------------------------------------
# datasets: one per step (pipeline checkpoint), one per setting, one for all settings
# ---------------------------------------------------------------------------------------
def _padded_basis(basis: np.ndarray) -> np.ndarray:
    """(D, k) → (D, D): zero columns after the k basis vectors (B Bᵀ is unchanged)."""
    out = np.zeros((basis.shape[0], basis.shape[0]))
    out[:, : basis.shape[1]] = basis
    return out


def _status_variable(dims, values) -> xr.Variable:
    return variable(
        dims, np.asarray(values, dtype=np.int8), "outcome of the heuristic step",
        flag_values=np.array(list(STATUS.values()), dtype=np.int8),
        flag_meanings=" ".join(STATUS),
    )


def step_dataset(step: Step) -> xr.Dataset:
    """One step as a dataset (dims step (length 1), component, direction, particle)."""
    s = ("step",)
    basis_dims = ("step", "component", "direction")
    cloud_dims = ("step", "particle", "component")
    n, d = step.trained.shape
    return xr.Dataset(
        {
            "basis": variable(basis_dims, _padded_basis(step.basis)[None],
                              "orthonormal basis of E_j (zero columns after subspace_dim)"),
            "subspace_dim": variable(s, [step.basis.shape[1]], "dimension of E_j"),
            "next_basis": variable(basis_dims, _padded_basis(step.next_basis)[None],
                                   "orthonormal basis of E_j plus the kept directions"),
            "next_dim": variable(s, [step.next_basis.shape[1]], "dimension of next_basis"),
            "initial_particles": variable(cloud_dims, step.initial[None],
                                          "student particles at t = 0 (on E_j)"),
            "trained_particles": variable(cloud_dims, step.trained[None],
                                          "student particles after free training"),
            "rmd_projected": variable(s, [step.rmd_projected],
                                      "RMD(nu, (P_Ej)#nu), closed form"),
            "rmd_symmetrized": variable(s, [step.rmd_symmetrized],
                                        "RMD(nu, nu^G), exact optimal transport"),
            "rmd_fixed": variable(s, [step.rmd_fixed], "RMD(nu, (P_E)#nu) to the true E^G"),
            "population_risk": variable(s, [step.population_risk],
                                        "population risk of the trained student"),
            "threshold": variable(s, [step.threshold], "threshold d_j on rmd_projected"),
            "singular_values": variable(("step", "direction"), step.singular_values[None],
                                        "singular values of the residual outside E_j"),
            "n_new_directions": variable(s, [step.new_directions.shape[1]],
                                         "principal directions kept"),
            "status": _status_variable(s, [STATUS[step.status]]),
        },
        coords={"step": [step.index], "component": np.arange(d), "direction": np.arange(d),
                "particle": np.arange(n)},
    )


def _setting_summary(problem_name: str, fixed: np.ndarray, steps: xr.Dataset) -> xr.Dataset:
    """Setting-level variables: true and recovered dimension, angles, E^G basis."""
    last = steps.isel(step=-1)
    k = int(last["subspace_dim"])
    basis = last["basis"].values[:, :k]
    d, m = fixed.shape
    angle_vals = angles_to(basis, fixed)
    return xr.Dataset(
        {
            "true_dim": variable((), fixed.shape[1], "dimension of E^G"),
            "recovered_dim": variable((), k, "dimension of the recovered subspace"),
            "n_steps": variable((), steps.sizes["step"], "steps run"),
            "dim_z": variable((), d, "dimension D of the parameter space Z"),
            "n_particles": variable((), steps.sizes["particle"], "particles N"),
            "fixed_basis": variable(("component", "fixed_direction"), fixed,
                                    "orthonormal basis of E^G"),
            "principal_angles": variable(
                ("fixed_direction",), angle_vals,
                "principal angles between the recovered subspace and E^G (ascending; pi/2 "
                "for an E^G direction without partner)", units="rad"),
            "max_principal_angle": variable((), angle_vals.max(initial=0.0),
                                            "largest principal angle to E^G", units="rad"),
        },
        coords={"setting": problem_name, "fixed_direction": np.arange(m)},
    )


def setting_dataset(problem_name: str, fixed_basis: np.ndarray, steps) -> xr.Dataset:
    """All steps of one setting (a list of :func:`step_dataset`\\ s, in order) plus its
    summary (:func:`_setting_summary`)."""
    steps = sorted(steps, key=lambda ds: int(ds["step"].values[0]))
    index = [int(ds["step"].values[0]) for ds in steps]
    if index != list(range(len(steps))):
        raise HeuristicError(f"setting {problem_name!r}: steps {index} are not 0, 1, …")
    stacked = xr.concat(steps, dim="step", data_vars="all", coords="minimal", join="exact")
    return xr.merge([stacked, _setting_summary(problem_name, fixed_basis, stacked)])


def discovery_dataset(result: Discovery) -> xr.Dataset:
    """The per-setting dataset of an in-memory :class:`Discovery`."""
    return setting_dataset(result.problem.name, result.problem.group.fixed_basis(),
                           [step_dataset(s) for s in result.steps])


def combine_settings(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """``heuristic.nc``: the setting datasets along a new ``setting`` dimension.

    Settings differ in D, N and the number of steps; shorter axes are padded with zeros
    (status ``not_run`` for missing steps) and ``dim_z``, ``n_particles``, ``n_steps``,
    ``subspace_dim`` and ``true_dim`` say which entries are real.
    """
    names = [str(ds["setting"].values) for ds in datasets]
    if len(set(names)) != len(names):
        raise HeuristicError(f"setting names must be unique, got {names}")
    out = xr.concat(list(datasets), dim="setting", join="outer", fill_value=0,
                    data_vars="all", coords="minimal", compat="override",
                    combine_attrs="override")
    for name, var in out.data_vars.items():  # outer joins may promote ints to floats
        var.attrs = dict(datasets[0][name].attrs)
        if datasets[0][name].dtype.kind in "iu":
            out[name] = var.astype(datasets[0][name].dtype)
    return out


# ---------------------------------------------------------------------------------------
# configuration sections → loop and training settings
# ---------------------------------------------------------------------------------------
def heuristic_config(section: Mapping) -> HeuristicConfig:
    """The :class:`HeuristicConfig` of the ``heuristic`` section (other keys ignored)."""
    return HeuristicConfig.from_dict(
        {k: v for k, v in section.items() if k not in PIPELINE_KEYS}
    )


def training_config(training: Mapping, overrides: Mapping) -> TrainConfig:
    """The heuristic's :class:`TrainConfig`: ``training`` with ``heuristic.training`` on top."""
    return TrainConfig.from_dict({**dict(training), **dict(overrides)})
