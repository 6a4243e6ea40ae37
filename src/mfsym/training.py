"""The one training engine: batched mean-field noisy SGD (PAPER.md §4).

For each run and each particle i, every step does

    θᵢ ← θᵢ − (α/N) · Π_d [ F_i + 2τ θᵢ ] + √(2αβ/N) · Π_n ξᵢ,      ξᵢ ~ N(0, I_D),

with ``F_i = Σ_{g,b} J_i(g x_b)ᵀ c_{g,b}`` the scheme's force (``mfsym.schemes``), Π_d the
drift projector (P_E for EA, else I) and Π_n the noise projector (P_E for EA or an SI
start, else I).  A run lasts ``round(N·T)`` steps, so its mean-field time is ``t = step/N``.

Vectorisation.  A *stack* of runs (teacher, scheme, seed) sharing N and the
initialisation trains as one tensor program: particles ``(R, N, D)``, samples
``(R, m·B, dx)``.  Runs are split by the number m of views per sample (m = 1 for vanilla,
random-g DA and EA; m = |G| for FA and orbit-averaged DA) into at most two blocks so that
no work is padded; both blocks advance in the same step loop.

Randomness.  Every seed owns one random stream (``torch.Generator`` seeded from
``(seed, N)``) that draws, in chunks of ``rng_chunk`` steps, the inputs x, the DA group
elements and the noise ξ.  All runs with the same seed — every teacher and scheme, and
both initialisations — see the same samples and noise (common random numbers), so
differences between schemes reflect the schemes, and a run's result does not depend on
which stack it was trained in.  Initial particles depend on ``(seed, N)`` only; the SI
start is the WI draw projected on E^G, and EA starts from that projection too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from . import checkpoint as ckpt
from .device import resolve_device, resolve_dtype
from .groups import FiniteGroup
from .kernels import select_kernel
from .schemes import DA_MODES, INITS, check_scheme, projects_drift, projects_noise, uses_orbit
from .teachers import Teacher
from .units import Unit

log = logging.getLogger(__name__)

SNAPSHOT_SPACINGS = ("log", "linear")


class TrainingDiverged(RuntimeError):
    """One or more runs produced non-finite values; ``runs`` lists them with their step."""

    def __init__(self, message: str, runs: list[dict]):
        super().__init__(message)
        self.runs = runs


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
    checks; checkpoint_every: steps between checkpoints (0: never); log_every_s: seconds
    between progress lines; keep_particle_snapshots: also return the particles at every
    snapshot; dtype: "float32" or "float64"; device: "auto", "cpu", "cuda[:k]";
    backend: force-kernel implementation (see ``mfsym.kernels``).
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
    checkpoint_every: int = 0
    log_every_s: float = 30.0
    keep_particle_snapshots: bool = False
    dtype: str = "float32"
    device: str = "auto"
    backend: str = "auto"

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
            isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0,
            "checkpoint_every",
            "must be an integer ≥ 0 (0 disables checkpoints)",
        )
        need(_finite(self.log_every_s) and self.log_every_s > 0, "log_every_s", "must be > 0")
        resolve_dtype(self.dtype)

    @classmethod
    def from_dict(cls, values: Mapping) -> TrainConfig:
        """Build from a plain mapping; an unknown key raises naming it and the allowed keys."""
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"unknown training key(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(**dict(values))

    def to_dict(self) -> dict:
        return asdict(self)

    def total_steps(self, n_particles: int) -> int:
        return max(1, int(round(n_particles * self.T)))


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _posint(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@dataclass(frozen=True)
class RunSpec:
    """One run of a stack: which teacher, which scheme, which seed."""

    teacher: str
    scheme: str
    seed: int


@dataclass
class StackResult:
    """What a stack of R runs records; arrays are NumPy float64, run-major.

    steps, times: (K,) snapshot steps and mean-field times ``step/N``;
    train_loss: (R, K) mean minibatch loss over the window ending at each snapshot
    (at t = 0 the first minibatch's loss); population_risk: (R, K) Monte-Carlo risk of the
    scheme's model on the fixed evaluation sample; rmd_projected: (R, K) RMD(ν, P_E#ν);
    dist_fixed: (R, K) RMS distance of the particles to E^G; initial_particles and
    final_particles: (R, N, D); particle_snapshots: (R, K, N, D) or None.
    """

    runs: list[RunSpec]
    n_particles: int
    init: str
    config: TrainConfig
    steps: np.ndarray
    times: np.ndarray
    train_loss: np.ndarray
    population_risk: np.ndarray
    rmd_projected: np.ndarray
    dist_fixed: np.ndarray
    initial_particles: np.ndarray
    final_particles: np.ndarray
    particle_snapshots: np.ndarray | None = None
    wall_time_s: float = 0.0
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# deterministic inputs of a run
# ---------------------------------------------------------------------------------------
def _seed_sequence(*key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(k) for k in key])


def initial_particles(
    group: FiniteGroup, n_particles: int, seed: int, init: str, init_std: float = 0.25
) -> np.ndarray:
    """Initial cloud ``(N, D)``: i.i.d. ``N(0, init_std²)`` entries (WI), projected on E^G (SI).

    Depends only on (seed, N): the SI start is the WI start projected.
    """
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r}; allowed: {list(INITS)}")
    if not _posint(n_particles):
        raise ValueError(f"N must be an integer ≥ 1, got {n_particles!r}")
    rng = np.random.default_rng(_seed_sequence(seed, n_particles, 1))
    theta = init_std * rng.standard_normal((n_particles, group.dim_z))
    return group.project(theta) if init == "SI" else theta


def evaluation_inputs(n_eval: int, dim_x: int, input_std: float, eval_seed: int) -> np.ndarray:
    """The fixed Monte-Carlo sample of the population risk, ``(n_eval, dx)``."""
    rng = np.random.default_rng(_seed_sequence(eval_seed, 7))
    return input_std * rng.standard_normal((n_eval, dim_x))


def stream_seed(seed: int, n_particles: int) -> int:
    """The torch seed of a run's random stream (data, DA draws, noise)."""
    return int(_seed_sequence(seed, n_particles, 2).generate_state(1, dtype=np.uint64)[0] >> 1)


# ---------------------------------------------------------------------------------------
# snapshot schedule
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# random streams, one per seed
# ---------------------------------------------------------------------------------------
class _Streams:
    """Per-seed generators; a chunk is ``x (k, C, B, dx)``, ``g (k, C, B)``, ``ξ (k, C, N, D)``."""

    def __init__(self, seeds, n_particles, config, group, device, dtype, x_train=None):
        self.seeds = list(seeds)
        self.x_train = x_train
        self.n, self.cfg, self.device, self.dtype = n_particles, config, device, dtype
        self.dx, self.dz, self.order = group.dim_x, group.dim_z, group.order
        self.gens = []
        for s in self.seeds:
            gen = torch.Generator(device=device)
            gen.manual_seed(stream_seed(s, n_particles))
            self.gens.append(gen)

    def next_chunk(self, size: int):
        kw = {"device": self.device, "dtype": self.dtype}
        fixed = self.x_train is not None
        bsz = self.x_train.shape[0] if fixed else self.cfg.batch_size
        xs, gs, xis = [], [], []
        for gen in self.gens:  # one draw per seed and chunk, not per step or run
            if fixed:
                xs.append(self.x_train.expand(size, -1, -1))
            else:
                xs.append(
                    self.cfg.input_std * torch.randn(size, bsz, self.dx, generator=gen, **kw)
                )
            gs.append(
                torch.randint(0, self.order, (size, bsz), generator=gen, device=self.device)
            )
            xis.append(torch.randn(size, self.n, self.dz, generator=gen, **kw))
        return torch.stack(xs), torch.stack(gs), torch.stack(xis)

    def get_state(self) -> np.ndarray:
        return np.stack([g.get_state().cpu().numpy() for g in self.gens])

    def set_state(self, states: np.ndarray) -> None:
        for gen, st in zip(self.gens, states, strict=True):
            gen.set_state(torch.from_numpy(np.ascontiguousarray(st)).to(torch.uint8))


# ---------------------------------------------------------------------------------------
# one block: runs with the same number m of views per sample
# ---------------------------------------------------------------------------------------
class _Block:
    def __init__(self, idx, runs, seed_index, eng):
        self.idx = np.asarray(idx)  # positions in the full stack
        self.runs = runs
        self.eng = eng
        cfg, dev, dt = eng.cfg, eng.device, eng.dtype
        group = eng.group
        schemes = [r.scheme for r in runs]
        self.m = group.order if uses_orbit(schemes[0], cfg.da_mode) else 1
        R = len(runs)
        self.ridx = torch.tensor([seed_index[r.seed] for r in runs], device=dev)
        self.is_da = torch.tensor([s == "DA" for s in schemes], device=dev)
        self.any_da = bool(self.is_da.any()) and self.m == 1
        self.is_fa = torch.tensor([s == "FA" for s in schemes], device=dev)
        self.any_fa, self.all_fa = bool(self.is_fa.any()), bool(self.is_fa.all())
        eye = torch.eye(group.dim_z, device=dev, dtype=dt)
        pe = eng.p_e
        drift = [projects_drift(s) for s in schemes]
        noise = [projects_noise(s, eng.init) for s in schemes]
        noise_p = [eng.p_sub if s != "EA" else pe for s in schemes]
        self.any_ea = any(drift)
        self.p_drift = torch.stack([pe if d else eye for d in drift])
        self.any_noise_proj = any(noise)
        self.p_noise = torch.stack([p if d else eye for d, p in zip(noise, noise_p, strict=True)])
        # teacher clouds, padded to a common size with zero weights
        tps = [eng.teachers[r.teacher].particles for r in runs]
        kmax = max(t.shape[0] for t in tps)
        tp = np.zeros((R, kmax, group.dim_z))
        tw = np.zeros((R, kmax))
        for i, t in enumerate(tps):
            tp[i, : len(t)] = t
            tw[i, : len(t)] = 1.0 / len(t)
        self.t_particles = torch.as_tensor(tp, device=dev, dtype=dt)
        self.t_weights = torch.as_tensor(tw, device=dev, dtype=dt)
        init = np.stack([eng.init_particles[r.seed] for r in runs])
        if self.any_ea:
            init = np.where(np.array(drift)[:, None, None], init @ eng.group.reynolds(), init)
        self.initial = init
        self.theta = torch.as_tensor(init, device=dev, dtype=dt).clone()
        self.lr = cfg.alpha / eng.n
        self.wd = 2.0 * cfg.tau
        self.noise = math.sqrt(2.0 * cfg.alpha * cfg.beta / eng.n)
        # recorder
        K = len(eng.snap_steps)
        self.train_loss = np.zeros((R, K))
        self.risk = np.zeros((R, K))
        self.rmd_proj = np.zeros((R, K))
        self.dist = np.zeros((R, K))
        self.snaps = np.zeros((R, K, eng.n, group.dim_z)) if cfg.keep_particle_snapshots else None
        self.loss_acc = torch.zeros(R, device=dev, dtype=torch.float64)
        self.first_bad = torch.full((R,), -1, dtype=torch.long, device=dev)
        self.y_eval = self._teacher_out(eng.x_eval.expand(R, -1, -1))

    # -- model pieces -------------------------------------------------------------------
    def _teacher_out(self, xs):
        """Teacher targets ``(R, S, dy)`` for inputs ``(R, S, dx)``."""
        per = self.eng.unit.per_particle(self.t_particles, xs)  # (R, S, K, dy)
        return torch.einsum("rskd,rk->rsd", per, self.t_weights)

    def _model_particles(self, theta):
        return theta @ self.p_drift.transpose(1, 2) if self.any_ea else theta

    def _views(self, xs, g):
        """Inputs seen by the model, ``(R, m, S, dx)``, for raw inputs ``(R, S, dx)``."""
        gx = self.eng.gx
        if self.m > 1:
            return torch.einsum("gij,rsj->rgsi", gx, xs)
        if self.any_da:
            return torch.einsum("rsij,rsj->rsi", gx[g], xs).unsqueeze(1)
        return xs.unsqueeze(1)

    def _residual_terms(self, out, y, g):
        """Loss per run and cotangent for residual-type schemes (vanilla, DA, EA)."""
        gy = self.eng.gy
        if self.m > 1:
            target = torch.einsum("gij,rsj->rgsi", gy, y)
        elif self.any_da:
            target = torch.einsum("rsij,rsj->rsi", gy[g], y).unsqueeze(1)
        else:
            target = y.unsqueeze(1)
        e = out - target
        denom = self.m * y.shape[1]
        return (e * e).sum(-1).sum((1, 2)) / denom, (2.0 / denom) * e

    def _fa_terms(self, out, y):
        """Loss and cotangent of feature averaging: Φ̂ = (1/m) Σ_g gᵀ out_g."""
        gy = self.eng.gy
        e = torch.einsum("gji,rgsj->rsi", gy, out) / self.m - y
        denom = self.m * y.shape[1]
        cot = (2.0 / denom) * torch.einsum("gij,rsj->rgsi", gy, e)
        return (e * e).sum(-1).mean(-1), cot

    def step(self, x_all, g_all, xi_all, j):
        """One noisy SGD step for every run of the block; ``j`` is the global step index."""
        xs = x_all[self.ridx]  # (R, B, dx)
        g = g_all[self.ridx]  # (R, B)
        g = torch.where(self.is_da[:, None], g, self.eng.identity) if self.any_da else g
        y = self._teacher_out(xs)
        views = self._views(xs, g)
        R, m, B, dx = views.shape
        theta_m = self._model_particles(self.theta)
        out, pullback = self.eng.kernel.output_and_pullback(theta_m, views.reshape(R, m * B, dx))
        out = out.reshape(R, m, B, -1)
        if self.all_fa:
            loss, cot = self._fa_terms(out, y)
        elif self.any_fa:
            loss_r, cot_r = self._residual_terms(out, y, g)
            loss_f, cot_f = self._fa_terms(out, y)
            loss = torch.where(self.is_fa, loss_f, loss_r)
            cot = torch.where(self.is_fa[:, None, None, None], cot_f, cot_r)
        else:
            loss, cot = self._residual_terms(out, y, g)
        force = pullback(cot.reshape(R, m * B, -1))
        drift = force + self.wd * self.theta
        if self.any_ea:
            drift = drift @ self.p_drift
        xi = xi_all[self.ridx]
        if self.any_noise_proj:
            xi = xi @ self.p_noise
        self.theta = self.theta - self.lr * drift + self.noise * xi
        bad = ~torch.isfinite(loss)
        self.first_bad = torch.where(bad & (self.first_bad < 0), j, self.first_bad)
        self.loss_acc += loss.to(torch.float64)
        return loss

    # -- measurements ---------------------------------------------------------------------
    def population_risk(self, theta) -> torch.Tensor:
        """Monte-Carlo risk ``mean_x ‖Φ̂(x) − y(x)‖²`` of each run's model, shape (R,)."""
        eng = self.eng
        theta_m = self._model_particles(theta)
        R, n = theta.shape[0], eng.n
        n_eval = eng.x_eval.shape[1]
        chunk = max(1, int(4e6 // max(1, R * n * self.m * eng.group.dim_y)))
        total = torch.zeros(R, device=theta.device, dtype=torch.float64)
        for start in range(0, n_eval, chunk):
            xs = eng.x_eval[:, start : start + chunk].expand(R, -1, -1)
            y = self.y_eval[:, start : start + chunk]
            if self.m > 1:
                views = torch.einsum("gij,rsj->rgsi", eng.gx, xs)
                out = eng.unit.output(theta_m, views.reshape(R, -1, views.shape[-1]))
                out = out.reshape(R, self.m, xs.shape[1], -1)
                fa = torch.einsum("gji,rgsj->rsi", eng.gy, out) / self.m
                plain = out[:, eng.identity_index]
                pred = torch.where(self.is_fa[:, None, None], fa, plain)
            else:
                pred = eng.unit.output(theta_m, xs)
            total += ((pred - y) ** 2).sum(-1).sum(-1).to(torch.float64)
        return total / n_eval

    def record(self, k, theta, step_now, prev_step):
        eng = self.eng
        count = step_now - prev_step
        if count > 0:
            self.train_loss[:, k] = (self.loss_acc / count).cpu().numpy()
        elif k > 0:
            self.train_loss[:, k] = self.train_loss[:, k - 1]
        self.loss_acc.zero_()
        self.risk[:, k] = self.population_risk(theta).cpu().numpy()
        th = theta.to(torch.float64)
        proj = th @ eng.p_e64
        w2 = ((th - proj) ** 2).sum(-1).mean(-1)
        m2 = 2.0 * (th**2).sum(-1).mean(-1) + 2.0 * (proj**2).sum(-1).mean(-1)
        ratio = torch.where(m2 > 0, w2 / torch.where(m2 > 0, m2, 1.0), 0.0)
        self.rmd_proj[:, k] = ratio.clamp(0, 1).sqrt().cpu().numpy()
        self.dist[:, k] = w2.sqrt().cpu().numpy()
        if self.snaps is not None:
            self.snaps[:, k] = th.cpu().numpy()

    # -- checkpoint state -------------------------------------------------------------------
    def state(self, prefix):
        out = {
            f"{prefix}theta": self.theta.cpu().numpy(),
            f"{prefix}train_loss": self.train_loss,
            f"{prefix}risk": self.risk,
            f"{prefix}rmd_proj": self.rmd_proj,
            f"{prefix}dist": self.dist,
            f"{prefix}loss_acc": self.loss_acc.cpu().numpy(),
            f"{prefix}first_bad": self.first_bad.cpu().numpy(),
        }
        if self.snaps is not None:
            out[f"{prefix}snaps"] = self.snaps
        return out

    def load_state(self, arrays, prefix):
        dev = self.theta.device
        self.theta = torch.as_tensor(arrays[f"{prefix}theta"], device=dev)
        self.train_loss = arrays[f"{prefix}train_loss"].copy()
        self.risk = arrays[f"{prefix}risk"].copy()
        self.rmd_proj = arrays[f"{prefix}rmd_proj"].copy()
        self.dist = arrays[f"{prefix}dist"].copy()
        self.loss_acc = torch.as_tensor(arrays[f"{prefix}loss_acc"], device=dev)
        self.first_bad = torch.as_tensor(arrays[f"{prefix}first_bad"], device=dev)
        if self.snaps is not None:
            self.snaps = arrays[f"{prefix}snaps"].copy()


# ---------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------
class _Engine:
    def __init__(
        self, group, unit, teachers, runs, n_particles, init, cfg, init_particles, x_eval,
        x_train=None, subspace=None,
    ):
        self.group, self.unit, self.cfg = group, unit, cfg
        self.teachers, self.runs, self.n, self.init = teachers, runs, n_particles, init
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype)
        self.kernel = select_kernel(unit, cfg.backend, self.device)
        kw = {"device": self.device, "dtype": self.dtype}
        self.gx = torch.tensor(group.x, **kw)
        self.gy = torch.tensor(group.y, **kw)
        self.p_e = torch.as_tensor(group.reynolds(), **kw)
        self.p_e64 = torch.as_tensor(group.reynolds(), device=self.device, dtype=torch.float64)
        self.p_sub = self.p_e if subspace is None else torch.as_tensor(subspace, **kw)
        self.subspace = subspace
        if x_train is not None:
            x_train = torch.as_tensor(np.asarray(x_train), **kw)
        self.identity_index = group.identity_index()
        self.identity = torch.tensor(self.identity_index, device=self.device)
        seeds = sorted({r.seed for r in runs})
        self.init_particles = {
            s: np.asarray(init_particles[s]) if init_particles is not None and s in init_particles
            else initial_particles(group, n_particles, s, init, cfg.init_std)
            for s in seeds
        }
        if x_eval is None:
            x_eval = evaluation_inputs(cfg.n_eval, group.dim_x, cfg.input_std, cfg.eval_seed)
        self.x_eval = torch.as_tensor(np.asarray(x_eval), **kw).unsqueeze(0)
        self.x_train = x_train
        self.streams = _Streams(
            seeds, n_particles, cfg, group, self.device, self.dtype, x_train=x_train
        )
        seed_index = {s: i for i, s in enumerate(seeds)}
        self.snap_steps = snapshot_steps(cfg, n_particles)
        families: dict[int, list[int]] = {}
        for i, r in enumerate(runs):
            families.setdefault(int(uses_orbit(r.scheme, cfg.da_mode)), []).append(i)
        self.blocks = [
            _Block(idx, [runs[i] for i in idx], seed_index, self)
            for _, idx in sorted(families.items())
        ]

    def fingerprint(self) -> dict:
        h = __import__("hashlib").sha256()
        for name in sorted(self.teachers):
            h.update(name.encode() + np.ascontiguousarray(self.teachers[name].particles).tobytes())
        for s in sorted(self.init_particles):
            h.update(np.ascontiguousarray(self.init_particles[s]).tobytes())
        h.update(np.ascontiguousarray(self.x_eval.cpu().numpy()).tobytes())
        for extra in (self.x_train, self.subspace):
            if extra is not None:
                h.update(np.ascontiguousarray(torch.as_tensor(extra).cpu().numpy()).tobytes())
        return {
            "config": {k: v for k, v in self.cfg.to_dict().items() if k not in ("log_every_s",)},
            "runs": [asdict(r) for r in self.runs],
            "N": self.n,
            "init": self.init,
            "group": self.group.name,
            "z_action": np.round(self.group.z, 12).tolist(),
            "unit": [self.unit.name, self.unit.activation.name, self.unit.dx, self.unit.dy],
            "inputs_sha256": h.hexdigest(),
        }

    def _check(self, step):
        bad_runs = []
        for b in self.blocks:
            fb = b.first_bad.cpu().numpy()
            nonfinite = ~torch.isfinite(b.theta).reshape(len(b.runs), -1).all(1).cpu().numpy()
            for i, r in enumerate(b.runs):
                if fb[i] >= 0 or nonfinite[i]:
                    at = int(fb[i]) if fb[i] >= 0 else step
                    bad_runs.append({**asdict(r), "step": at})
        if not bad_runs:
            return
        total = self.cfg.total_steps(self.n)
        c = self.cfg
        lines = [
            f"  teacher={d['teacher']} scheme={d['scheme']} seed={d['seed']}: non-finite at "
            f"step {d['step']} of {total} (t = {d['step'] / self.n:.4g})"
            for d in bad_runs
        ]
        msg = (
            f"training diverged for {len(bad_runs)} run(s) (N={self.n}, init={self.init}; "
            f"alpha={c.alpha}, tau={c.tau}, beta={c.beta}, batch_size={c.batch_size}, "
            f"T={c.T}, dtype={c.dtype}):\n" + "\n".join(lines) + "\n"
            "No result was written; lower alpha or use dtype float64."
        )
        raise TrainingDiverged(msg, bad_runs)

    def run(self, checkpoint_path=None, label=""):
        cfg, n = self.cfg, self.n
        total = cfg.total_steps(n)
        chunk = cfg.rng_chunk
        ck_every = 0  # checkpoints need somewhere to go: none without a path
        if cfg.checkpoint_every and checkpoint_path is not None:
            ck_every = max(chunk, (cfg.checkpoint_every + chunk - 1) // chunk * chunk)
        meta = self.fingerprint() if checkpoint_path is not None else None
        step, k_next, prev_snap = 0, 0, 0
        state = ckpt.load_checkpoint(checkpoint_path, meta) if checkpoint_path else None
        if state is not None:
            step, k_next, prev_snap = (int(v) for v in state["counters"])
            self.streams.set_state(state["streams"])
            for bi, b in enumerate(self.blocks):
                b.load_state(state, f"b{bi}_")
            log.info("%s resumed at step %d of %d", label, step, total)
        snaps = self.snap_steps
        t0 = time.monotonic()
        last_log, step0 = t0, step
        while step < total:
            size = min(chunk, total - step)
            x_all, g_all, xi_all = self.streams.next_chunk(chunk)
            for j in range(size):
                while k_next < len(snaps) and snaps[k_next] == step:
                    for b in self.blocks:
                        b.record(k_next, b.theta, step, prev_snap)
                    prev_snap = step
                    k_next += 1
                for b in self.blocks:
                    b.step(x_all[:, j], g_all[:, j], xi_all[:, j], step)
                    if step == 0 and snaps[0] == 0:
                        b.train_loss[:, 0] = b.loss_acc.cpu().numpy()
                step += 1
                if step % cfg.check_every == 0:
                    self._check(step)
            now = time.monotonic()
            if now - last_log >= cfg.log_every_s:
                rate = (step - step0) / max(now - t0, 1e-9)
                eta = (total - step) / max(rate, 1e-9)
                log.info(
                    "%s step %d/%d (%.1f%%), %.0f steps/s, ETA %.0f s",
                    label, step, total, 100.0 * step / total, rate, eta,
                )
                last_log = now
            if ck_every and step % ck_every == 0 and step < total:
                self._check(step)
                arrays = {"counters": np.array([step, k_next, prev_snap])}
                arrays["streams"] = self.streams.get_state()
                for bi, b in enumerate(self.blocks):
                    arrays.update(b.state(f"b{bi}_"))
                ckpt.save_checkpoint(checkpoint_path, arrays, meta)
        self._check(step)
        while k_next < len(snaps):
            for b in self.blocks:
                b.record(k_next, b.theta, step, prev_snap)
            prev_snap = step
            k_next += 1
        return time.monotonic() - t0


def train_stack(
    group: FiniteGroup,
    unit: Unit,
    teachers: Mapping[str, Teacher],
    runs: Sequence[RunSpec],
    n_particles: int,
    init: str,
    config: TrainConfig | None = None,
    *,
    init_particles: Mapping[int, np.ndarray] | None = None,
    x_eval: np.ndarray | None = None,
    x_train: np.ndarray | None = None,
    subspace: np.ndarray | None = None,
    checkpoint_path=None,
    threads: int | None = None,
    label: str = "",
) -> StackResult:
    """Train a stack of runs sharing N and the initialisation; see the module docstring.

    ``init_particles`` maps seed → (N, D) initial cloud (default: :func:`initial_particles`);
    ``x_eval`` is the fixed (n_eval, dx) risk sample (default: :func:`evaluation_inputs`).
    ``x_train`` (n_train, dx): instead of fresh samples, every step uses this whole fixed
    training set (full-batch gradient descent; ``batch_size`` is then ignored).
    ``subspace`` (D, D): an orthogonal projector replacing P_E wherever non-EA runs project
    their noise (SI-type starts), e.g. the candidate subspace E_j of the discovery heuristic.
    With ``checkpoint_path`` the state is saved every ``config.checkpoint_every`` steps and
    a valid checkpoint there is resumed from (same final result as an uninterrupted run).
    Raises :class:`TrainingDiverged` if any run becomes non-finite.
    """
    cfg = config or TrainConfig()
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r}; allowed: {list(INITS)}")
    if not _posint(n_particles):
        raise ValueError(f"N must be an integer ≥ 1, got {n_particles!r}")
    if not runs:
        raise ValueError("empty stack: at least one RunSpec is needed")
    for r in runs:
        check_scheme(r.scheme)
        if r.teacher not in teachers:
            raise ValueError(f"unknown teacher {r.teacher!r}; available: {sorted(teachers)}")
        if teachers[r.teacher].particles.shape[1] != group.dim_z:
            raise ValueError(
                f"teacher {r.teacher!r} has particles of size "
                f"{teachers[r.teacher].particles.shape[1]}, the unit needs D={group.dim_z}"
            )
    if len(set(runs)) != len(runs):
        raise ValueError("the stack lists the same (teacher, scheme, seed) run twice")
    if group.dim_z != unit.dim_z:
        raise ValueError(f"group acts on D={group.dim_z} but the unit has D={unit.dim_z}")
    if x_train is not None:
        xt = np.asarray(x_train)
        if xt.ndim != 2 or xt.shape[1] != group.dim_x or xt.shape[0] == 0:
            raise ValueError(f"x_train must have shape (n, {group.dim_x}), got {xt.shape}")
    if subspace is not None:
        p = np.asarray(subspace, dtype=np.float64)
        if p.shape != (group.dim_z, group.dim_z) or not (
            np.allclose(p, p.T, atol=1e-8) and np.allclose(p @ p, p, atol=1e-8)
        ):
            raise ValueError(
                f"subspace must be an orthogonal projector of shape ({group.dim_z}, "
                f"{group.dim_z}) (symmetric, idempotent), got shape {p.shape}"
            )
    if threads:
        torch.set_num_threads(int(threads))
    eng = _Engine(
        group, unit, teachers, list(runs), n_particles, init, cfg, init_particles, x_eval,
        x_train=x_train, subspace=subspace,
    )
    wall = eng.run(checkpoint_path, label or f"N={n_particles} init={init}")
    order = np.concatenate([b.idx for b in eng.blocks])
    inv = np.argsort(order)

    def gather(name):
        return np.concatenate([getattr(b, name) for b in eng.blocks])[inv]

    final = np.concatenate([b.theta.to(torch.float64).cpu().numpy() for b in eng.blocks])[inv]
    snaps = gather("snaps") if cfg.keep_particle_snapshots else None
    return StackResult(
        runs=list(runs),
        n_particles=n_particles,
        init=init,
        config=cfg,
        steps=eng.snap_steps.copy(),
        times=eng.snap_steps / n_particles,
        train_loss=gather("train_loss"),
        population_risk=gather("risk"),
        rmd_projected=gather("rmd_proj"),
        dist_fixed=gather("dist"),
        initial_particles=gather("initial"),
        final_particles=final,
        particle_snapshots=snaps,
        wall_time_s=wall,
    )
