"""The hyperparameters of one training and the snapshot schedule they fix (PAPER.md §4).

:class:`TrainConfig` holds every number of a training, the paper's values as defaults, and
refuses a bad value naming it and what is allowed.  A run lasts ``round(N·T)`` steps; its
snapshots are taken at the steps :func:`snapshot_steps` derives from ``T``,
``n_snapshots`` and ``snapshot_spacing`` (the mean-field time of step s is s/N).  How the
engine uses each value is described in :mod:`mfsym.engine.training`.

Precision.  ``dtype = "auto"`` trains a stack in float64 when its step α/N is at least
``float64_step_min`` and in float32 otherwise: with a large step, float32 rounding is
amplified enough to break invariances that hold exactly in exact arithmetic (measured: FA
from an SI start, α = 50, reaches RMD² ≈ 3·10⁻⁴ to its projection on E^G at N = 10 in
float32, ≤ 10⁻²⁴ in float64; at N ≥ 20, step ≤ 2.5, float32 stays below 10⁻¹¹).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ..core.schemes import DA_MODES
from ..core.settings import build_strict
from .device import DTYPES
from .kernels import BACKENDS

SNAPSHOT_SPACINGS = ("log", "linear")
COUPLINGS = ("common", "independent")
#: ``dtype`` values: a torch dtype, or "auto" (float64 for steps α/N ≥ float64_step_min).
DTYPE_CHOICES = (*sorted(DTYPES), "auto")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training (paper values as defaults, PAPER.md §4).

    alpha: learning rate α (step α/N); tau: weight decay τ; beta: temperature β;
    T: mean-field time horizon (N·T steps); batch_size: B; input_std: σ of x ~ N(0, σ²I);
    init_std: std of the i.i.d. Gaussian initial particles; da_mode: "random" (one g per
    sample) or "orbit" (loss averaged over the orbit); n_snapshots: number of recorded
    times (including t = 0 and t = T); snapshot_spacing: "log" or "linear" in time;
    n_eval: Monte-Carlo samples of the population risk; eval_seed: seed of that sample;
    rng_chunk: steps of randomness drawn at once; check_every: steps between divergence
    checks; divergence_factor: growth of the particle RMS or of the training loss over its
    reference at which a run counts as diverged (see the module docstring; paper-scale runs,
    α = 50 and T = 20 from N = 5, grow by less than 10); checkpoint_every: steps between
    checkpoints (0: never); log_every_s: seconds between progress lines;
    keep_particle_snapshots: also return the particles at every snapshot; dtype: "float32",
    "float64" or "auto" (float64 when the step α/N is at least float64_step_min, else
    float32; see the module docstring, "Precision"); device: "auto", "cpu", "cuda[:k]";
    backend: force-kernel implementation, "auto", "eager", "native" or "compile" (see
    ``mfsym.engine.kernels``; all agree with "eager" to float rounding, each is deterministic);
    coupling: "common" (the schemes of a seed share samples and noise) or "independent"
    (each scheme its own stream); see the module docstring, "Randomness".
    """

    alpha: float = 50.0
    tau: float = 1e-4
    beta: float = 1e-6
    T: float = 20.0
    batch_size: int = 20
    input_std: float = 4.0
    init_std: float = 0.25
    da_mode: str = "random"
    n_snapshots: int = 16
    snapshot_spacing: str = "log"
    n_eval: int = 2048
    eval_seed: int = 12345
    rng_chunk: int = 32
    check_every: int = 100
    divergence_factor: float = 1000.0
    checkpoint_every: int = 0
    log_every_s: float = 30.0
    keep_particle_snapshots: bool = False
    dtype: str = "float32"
    device: str = "auto"
    backend: str = "auto"
    coupling: str = "common"
    float64_step_min: float = 2.5

    def __post_init__(self):
        def need(cond, key, allowed):
            if not cond:
                raise ValueError(f"training.{key} = {getattr(self, key)!r} is invalid; {allowed}")

        need(_finite(self.alpha) and self.alpha > 0, "alpha", "must be a number > 0")
        need(_finite(self.tau) and self.tau >= 0, "tau", "must be a number ≥ 0")
        need(_finite(self.beta) and self.beta >= 0, "beta", "must be a number ≥ 0")
        need(_finite(self.T) and self.T > 0, "T", "must be a number > 0")
        need(_posint(self.batch_size), "batch_size", "must be an integer ≥ 1")
        need(_finite(self.input_std) and self.input_std > 0, "input_std", "must be > 0")
        need(_finite(self.init_std) and self.init_std > 0, "init_std", "must be > 0")
        need(self.da_mode in DA_MODES, "da_mode", f"allowed: {list(DA_MODES)}")
        need(_posint(self.n_snapshots) and self.n_snapshots >= 2, "n_snapshots", "must be ≥ 2")
        need(
            self.snapshot_spacing in SNAPSHOT_SPACINGS,
            "snapshot_spacing",
            f"allowed: {list(SNAPSHOT_SPACINGS)}",
        )
        need(_posint(self.n_eval), "n_eval", "must be an integer ≥ 1")
        need(_posint(self.rng_chunk), "rng_chunk", "must be an integer ≥ 1")
        need(_posint(self.check_every), "check_every", "must be an integer ≥ 1")
        need(
            _finite(self.divergence_factor) and self.divergence_factor > 1,
            "divergence_factor",
            "must be a number > 1",
        )
        need(
            isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0,
            "checkpoint_every",
            "must be an integer ≥ 0 (0 disables checkpoints)",
        )
        need(_finite(self.log_every_s) and self.log_every_s > 0, "log_every_s", "must be > 0")
        need(self.dtype in DTYPE_CHOICES, "dtype", f"allowed: {list(DTYPE_CHOICES)}")
        need(self.coupling in COUPLINGS, "coupling", f"allowed: {list(COUPLINGS)}")
        need(_finite(self.float64_step_min) and self.float64_step_min > 0,
             "float64_step_min", "must be a number > 0")
        need(
            isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device),
            "device",
            "allowed: 'auto', 'cpu', 'cuda', 'cuda:<index>'",
        )
        need(self.backend in BACKENDS, "backend", f"allowed: {list(BACKENDS)}")
        need(isinstance(self.keep_particle_snapshots, bool), "keep_particle_snapshots",
             "must be true or false")

    @classmethod
    def from_dict(cls, values: Mapping) -> TrainConfig:
        """Build from a plain mapping; an unknown key raises naming it and the allowed keys."""
        return build_strict(cls, values, "unknown training key(s) {unknown}; allowed: {allowed}")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_dtype(self, n_particles: int) -> str:
        """The dtype a stack of N particles trains in: ``dtype``, or for "auto" float64 when
        the step ``α/N ≥ float64_step_min``, else float32."""
        if self.dtype != "auto":
            return self.dtype
        return "float64" if self.alpha / n_particles >= self.float64_step_min else "float32"

    def total_steps(self, n_particles: int) -> int:
        """``round(N·T)``; ``N·T < 1`` (less than one step) raises ``ValueError``."""
        exact = n_particles * self.T
        if exact < 1.0 - 1e-9:
            raise ValueError(
                f"training.T = {self.T} with N = {n_particles} gives N·T = {exact:.4g} SGD "
                f"steps, fewer than one; a run needs T ≥ 1/N = {1.0 / n_particles:.4g}"
            )
        return max(1, int(round(exact)))


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _posint(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def snapshot_times(T: float, n: int, spacing: str) -> np.ndarray:
    """Nominal snapshot times in [0, T]: 0, then n−1 points log- (from T/1000) or linear."""
    if spacing == "linear":
        return np.linspace(0.0, T, n)
    return np.concatenate([[0.0], np.geomspace(T / 1000.0, T, n - 1)])


def snapshot_steps(config: TrainConfig, n_particles: int) -> np.ndarray:
    """Steps at which snapshots are taken (non-decreasing, first 0, last N·T)."""
    total = config.total_steps(n_particles)
    times = snapshot_times(config.T, config.n_snapshots, config.snapshot_spacing)
    steps = np.clip(np.round(times * n_particles).astype(np.int64), 0, total)
    steps[0], steps[-1] = 0, total
    return np.maximum.accumulate(steps)

