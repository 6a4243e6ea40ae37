"""The one training engine: batched mean-field noisy SGD (PAPER.md §4).

Update.  For each run and each particle i, every step does

    θᵢ ← θᵢ − (α/N) · Π_d [ F_i + 2τ θᵢ ] + √(2αβ/N) · Π_n ξᵢ,      ξᵢ ~ N(0, I_D),

the gradient step of the minibatch loss ``‖Φ̂(x) − y‖²`` (averaged over the B samples)
plus ``τ (1/N) Σᵢ ‖θᵢ‖²`` in mean-field scaling (step size α/N, force multiplied by N):
``F_i = Σ_{g,b} J_i(g x_b)ᵀ c_{g,b}`` with ``J_i(x) = ∂σ*(x, θ̃ᵢ)/∂θ̃ᵢ`` and the scheme's
cotangent ``c`` (``mfsym.core.schemes``; vanilla ``c_b = 2(Φ_N(x_b) − y_b)/B``).  EA's model uses
the projected particles ``θ̃ᵢ = P_E θᵢ`` (every other scheme ``θ̃ᵢ = θᵢ``), and Π_d = P_E for
EA, else I; Π_n = P_E for EA and, from an SI start, for every scheme (or the projector
``subspace`` given to :func:`train_stack`), else I.  In the form ``z ← z − η(g + λz)`` the
step is ``η = α/N`` and the weight decay ``λ = 2τ``; β = 0 switches the noise off.  A run
lasts ``round(N·T)`` steps; its mean-field time is ``t = step/N`` (the flow of the
mean-field limit runs at speed α in that clock), so the horizon is T.  A horizon shorter
than one step (``N·T < 1``) is refused rather than rounded up to a step whose time is not
T; otherwise the last step's time ``round(N·T)/N`` is within ``1/(2N)`` of T.

Divergence.  Every ``check_every`` steps, before each checkpoint and at the end, the
runs are checked (:mod:`mfsym.engine.divergence`); a diverged run raises, and no
result is written.

Vectorisation.  A *stack* of runs (teacher, scheme, seed) sharing N and the
initialisation trains as one tensor program: particles ``(R, N, D)``, samples
``(R, m·B, dx)``.  Runs are split by the number m of views per sample (m = 1 for vanilla,
random-g DA and EA; m = |G| for FA and orbit-averaged DA) into at most two blocks
(``mfsym.engine.blocks``) so that no work is padded; both advance in the same step loop, with no
Python loop over runs, particles or samples inside a step.  The force and update run in
one of the kernels of ``mfsym.engine.kernels`` (``backend``: fused C on a CPU by default).

Randomness.  Every random stream (``torch.Generator`` seeded from ``(seed, N)`` and the
stream's tag) draws, in chunks of ``rng_chunk`` steps, the inputs x, the DA group elements
(uniform indices of a finite group; for the quadrature subgroup of a compact group, Haar
elements of the compact group: ``mfsym.engine.blocks.HaarElements``) and the noise ξ.
With ``coupling = "common"`` all runs with the same seed — every teacher and scheme, and
both initialisations — share one stream and see the same samples and noise (common random
numbers), so differences between schemes reflect the schemes; with
``coupling = "independent"`` each scheme of a seed draws from its own stream (tagged by
the scheme label), still shared by the teachers and initialisations.  A run with a
``stream`` tag of its own (:class:`RunSpec`) draws from that stream under either coupling:
the same scheme from the same start with independent randomness, the finite-N floor of
the distance between two runs.  Every operation acts on each run on its
own, so a run's result does not depend on which stack it was trained in, and for a given
backend, dtype and device the result is a deterministic function of the seeds.

Precision.  ``dtype = "auto"`` trains in float64 when the step α/N is at least
``float64_step_min``, else float32 (:mod:`mfsym.engine.train_config`); the resolved
dtype is logged and recorded in :class:`StackResult`.  Initial particles depend on
``(seed, N, init_std)`` only, and the streams' seeds on ``(seed, N)`` and the tag
(:mod:`mfsym.engine.run_inputs`); EA starts from the projection of its seed's draw under
either initialisation.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.groups import FiniteGroup
from ..core.schemes import INITS, check_scheme, resolve_scheme, uses_orbit
from ..core.teachers import Teacher
from ..core.units import Unit
from ..records.threads import limit_threads
from . import checkpoint as ckpt
from . import kernels
from .blocks import Block, Streams, group_elements
from .chunk_feed import ChunkFeed, chunks_per_call, plans_ahead
from .device import resolve_device, resolve_dtype
from .divergence import TrainingDiverged, diverged_runs, divergence_report
from .fast_normal import check_normal_draws
from .kernels import select_kernel
from .models import OutputScaled, ResNet, model_output
from .run_inputs import (
    RunSpec,
    count_arg,
    evaluation_inputs,
    initial_particles,
    stream_seed,
    stream_tag,
)
from .stack_inputs import check_stack_arrays
from .train_config import TrainConfig, snapshot_steps

log = logging.getLogger(__name__)


@dataclass
class StackResult:
    """What a stack of R runs records; arrays are NumPy float64, run-major.

    steps, times: (K,) snapshot steps and mean-field times ``step/N``;
    train_loss: (R, K) mean minibatch loss over the window ending at each snapshot
    (at t = 0 the first minibatch's loss); population_risk: (R, K) Monte-Carlo risk of the
    scheme's model on the fixed evaluation sample; rmd_projected: (R, K) RMD(ν, P_E#ν);
    dist_fixed: (R, K) RMS distance of the particles to E^G; initial_particles and
    final_particles: (R, N, D); particle_snapshots: (R, K, N, D) or None.
    backend: the force kernel that ran, after any fallback (``"native"``, ``"eager"``,
    ``"compile"``; a fallback adds its reason in parentheses); dtype: ``"float32"`` or
    ``"float64"``; device: the torch device it ran on (``"cpu"``, ``"cuda:0"``, ...).
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
    backend: str = ""
    dtype: str = ""
    device: str = ""
    extra: dict = field(default_factory=dict)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (Python's, torch's CPU or CUDA allocator)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or "can't allocate memory" in text \
        or "out of memory" in text.lower()


# ---------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------
class _Engine:
    """Trains the blocks of one stack in one step loop; checkpoints, checks, logs."""

    def __init__(
        self, group, unit, teachers, runs, n_particles, init, cfg, init_particles, x_eval,
        x_train=None, subspace=None, draw_dtype=None, progress=None, draw_ahead=None,
        normal_draws="auto",
    ):
        self.group, self.unit, self.cfg = group, unit, cfg
        self.progress = progress
        self.teachers, self.runs, self.n, self.init = teachers, runs, n_particles, init
        self.device = resolve_device(cfg.device)
        self.dtype_name = cfg.resolved_dtype(n_particles)
        self.dtype = resolve_dtype(self.dtype_name)
        self.kernel_notes: list[str] = []
        with kernels.collect_warnings(self.kernel_notes):
            self.kernel = select_kernel(unit, cfg.backend, self.device, self.dtype)
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
        self.elements = group_elements(group, self.device, self.dtype)
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
        self.batch = cfg.batch_size if x_train is None else x_train.shape[0]
        keys = sorted({(r.seed, stream_tag(r, cfg.coupling)) for r in runs})
        self.streams = Streams(
            [stream_seed(s, n_particles, tag) for s, tag in keys], n_particles, cfg, group,
            self.device, self.dtype, x_train=x_train, elements=self.elements,
            draw_dtype=draw_dtype, normal_draws=normal_draws,
        )
        seed_index = {r: keys.index((r.seed, stream_tag(r, cfg.coupling))) for r in runs}
        self._init_teachers(seed_index)
        self.snap_steps = snapshot_steps(cfg, n_particles)
        families: dict[int, list[int]] = {}
        for i, r in enumerate(runs):
            orbit = uses_orbit(*resolve_scheme(r.scheme, cfg.da_mode))
            families.setdefault(int(orbit), []).append(i)
        self.blocks = [
            Block(idx, [runs[i] for i in idx], seed_index, self)
            for _, idx in sorted(families.items())
        ]
        self.feed = ChunkFeed(
            self, plans_ahead(draw_ahead, self.device, self.kernel),
            chunks_per_call(len(runs) * n_particles * self.batch,
                            len(keys) * n_particles * group.dim_z * self.dtype.itemsize,
                            cfg.rng_chunk, self.device),
        )

    def _init_teachers(self, seed_index):
        """Teacher clouds and the (teacher, stream) pairs whose targets a chunk needs;
        ``seed_index`` maps each run to the row of its stream."""
        kw = {"device": self.device, "dtype": self.dtype}
        self.teacher_names = sorted({r.teacher for r in self.runs})
        self.teacher_clouds = [
            torch.as_tensor(self.teachers[t].particles, **kw) for t in self.teacher_names
        ]
        pairs = sorted({(r.teacher, seed_index[r]) for r in self.runs})
        self.pair_index = {r: pairs.index((r.teacher, seed_index[r])) for r in self.runs}
        self.pair_rows = [(self.teacher_names.index(t), s) for t, s in pairs]
        self.y_eval = torch.stack([self._teacher(c, self.x_eval[0]) for c in self.teacher_clouds])

    def _teacher(self, cloud, x):
        """``y = Φ_teacher(x)`` (the model with the teacher's particles) for inputs ``(S, dx)``:
        ``(S, dy)``; for a unit ``mean_k σ*(x, t_k)``."""
        return model_output(self.unit, cloud, x)

    def teacher_targets(self, x_all):
        """Targets of every (teacher, stream) pair, ``(n_pairs, k, B, dy)``.

        Each pair is evaluated on its own, with shapes that do not depend on the stack, so
        its targets are the same bits in every stack (a loop over pairs once per chunk).
        """
        _, k, B, dx = x_all.shape
        ys = [
            self._teacher(self.teacher_clouds[t], x_all[s].reshape(k * B, dx))
            for t, s in self.pair_rows
        ]
        return torch.stack(ys).reshape(len(ys), k, B, -1)

    def fingerprint(self) -> dict:
        """What a checkpoint must match to be resumed: config, runs, inputs, kernel."""
        h = hashlib.sha256()
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
            "kernel": self.kernel.name,
            "runs": [asdict(r) for r in self.runs],
            "N": self.n,
            "init": self.init,
            "group": self.group.name,
            "z_action": np.round(self.group.z, 12).tolist(),
            "unit": [self.unit.name, self.unit.activation.name, self.unit.dx, self.unit.dy],
            "model": _model_key(self.unit),
            "inputs_sha256": h.hexdigest(),
        }

    @property
    def backend(self) -> str:
        """The kernel that ran, with the reason of any fallback."""
        name = self.kernel.name
        return f"{name} ({'; '.join(self.kernel_notes)})" if self.kernel_notes else name

    def _check(self, step, prev_snap):
        """Raise :class:`~.divergence.TrainingDiverged` naming every run that became
        non-finite or grew past ``divergence_factor`` times its reference."""
        bad_runs = diverged_runs(self.blocks, step, step - prev_snap, self.cfg.divergence_factor)
        if bad_runs:
            raise TrainingDiverged(divergence_report(
                bad_runs, self.cfg, self.n, self.init, self.dtype_name, self.kernel.name),
                bad_runs)

    def _latest(self, k: int) -> dict[str, float]:
        """The first run's training loss and distance to E^G at snapshot ``k`` (empty
        before the first snapshot)."""
        if k < 0:
            return {}
        b = self.blocks[0]
        return {"loss": float(b.train_loss[0, k]), "dist": float(b.dist[0, k])}

    def _record(self, k, step, prev_snap):
        for b in self.blocks:
            b.record(k, step, prev_snap)

    def _save(self, path, meta, step, k_next, prev_snap):
        self._check(step, prev_snap)
        arrays = {"counters": np.array([step, k_next, prev_snap])}
        arrays["streams"] = self.feed.stream_state()
        for bi, b in enumerate(self.blocks):
            arrays.update(b.state(f"b{bi}_"))
        ckpt.save_checkpoint(path, arrays, meta)

    def state_problem(self, state: Mapping[str, np.ndarray]) -> str | None:
        """Why the arrays of a checkpoint cannot be this engine's state (None: they can).

        A checkpoint is written inside the loop, at a step 0 < s < N·T, or when the loop
        ends (s = N·T), after the snapshots at steps < s were recorded: so its counters must be
        ``(s, #{snapshots < s}, last snapshot step < s, or 0)``, its keys, shapes and
        dtypes those of this engine's own state (:meth:`_save`), its numbers finite and no
        run marked as gone bad (a state is checked for divergence before it is saved).
        Other finite values cannot be told from genuine ones: the checksums vouch for
        those."""
        want = {"counters": np.zeros(3, dtype=np.int64), "streams": self.streams.get_state()}
        for bi, b in enumerate(self.blocks):
            want.update(b.state(f"b{bi}_"))
        if set(state) != set(want):
            return (f"its arrays are {sorted(state)}, not {sorted(want)}")
        for key, ref in want.items():
            got = state[key]
            if got.shape != ref.shape or got.dtype != ref.dtype:
                return (f"array {key!r} is {got.dtype}{list(got.shape)}, not "
                        f"{ref.dtype}{list(ref.shape)}")
            if np.issubdtype(got.dtype, np.inexact) and not np.isfinite(got).all():
                return f"array {key!r} holds non-finite values (a state is saved only finite)"
            if key.endswith("_first_bad") and (got != -1).any():
                return (f"array {key!r} marks a run as gone bad at step "
                        f"{int(got[got != -1][0])} (a state is saved only while every run "
                        f"is finite: all −1)")
        step, k_next, prev_snap = (int(v) for v in state["counters"])
        total = self.cfg.total_steps(self.n)
        k_want = int(np.searchsorted(self.snap_steps, step, side="left"))
        prev_want = int(self.snap_steps[k_want - 1]) if k_want else 0
        if not 0 < step <= total or (k_next, prev_snap) != (k_want, prev_want):
            return (f"its counters (step {step}, next snapshot {k_next}, last snapshot at "
                    f"{prev_snap}) are impossible for a run of {total} steps (a checkpoint "
                    f"at step s has 0 < s ≤ {total} and the snapshots before s behind it)")
        return None

    def run(self, checkpoint_path=None, label=""):
        """Train to ``N·T`` steps (resuming from a valid checkpoint); returns the wall time."""
        cfg, n = self.cfg, self.n
        total = cfg.total_steps(n)
        meta = self.fingerprint() if checkpoint_path is not None else None
        step, k_next, prev_snap = 0, 0, 0
        state = (ckpt.load_checkpoint(checkpoint_path, meta, self.state_problem)
                 if checkpoint_path else None)
        if state is not None:
            step, k_next, prev_snap = (int(v) for v in state["counters"])
            self.streams.set_state(state["streams"])
            for bi, b in enumerate(self.blocks):
                b.load_state(state, f"b{bi}_")
            log.info("%s resumed at step %d of %d", label, step, total)
        log.info(
            "%s: %d run(s), %d steps, kernel %s, %s on %s, coupling %s%s",
            label, len(self.runs), total, self.kernel.name, self.dtype_name, self.device,
            cfg.coupling, ", next chunk drawn ahead" if self.feed.ahead else "",
        )
        if cfg.dtype == "auto":
            log.info(
                "%s: dtype auto -> %s (step alpha/N = %.4g %s float64_step_min = %.4g)",
                label, self.dtype_name, cfg.alpha / n,
                ">=" if self.dtype_name == "float64" else "<", cfg.float64_step_min,
            )
        t0 = time.monotonic()
        try:
            with kernels.collect_warnings(self.kernel_notes):
                step = self._loop(step, k_next, prev_snap, total, checkpoint_path, meta, label)
        finally:
            self.close()
        wall = time.monotonic() - t0
        log.info("%s: done in %.1f s", label, wall)
        return wall

    def _steps_to_event(self, step: int, left: int, k_next: int) -> int:
        """Steps to run in one kernel call from ``step``: up to the next snapshot, the
        next divergence check or the end of the chunk (``left`` steps), whichever comes
        first; one step at step 0, whose loss the t = 0 snapshots report."""
        if step == 0:
            return 1
        run = min(left, self.cfg.check_every - step % self.cfg.check_every)
        if k_next < len(self.snap_steps):
            run = min(run, int(self.snap_steps[k_next]) - step)
        return max(run, 1)

    def close(self) -> None:
        """Stop the threads: the chunk feed's, then the streams'."""
        self.feed.close()
        self.streams.close()

    def _loop(self, step, k_next, prev_snap, total, checkpoint_path, meta, label):
        """The step loop from ``step`` to ``total``; records every snapshot on the way.
        Its chunks come from ``self.feed``, drawn in turn or ahead
        (:mod:`mfsym.engine.chunk_feed`)."""
        cfg, n, snaps = self.cfg, self.n, self.snap_steps
        chunk = cfg.rng_chunk
        ck_every = 0
        if cfg.checkpoint_every and checkpoint_path is not None:
            ck_every = max(chunk, (cfg.checkpoint_every + chunk - 1) // chunk * chunk)

        def block(at: int) -> int:
            """Steps of the draw starting at step ``at``: the feed's chunks, up to the end
            and the next checkpoint."""
            size = min(self.feed.steps, total - at)
            return min(size, ck_every - at % ck_every) if ck_every else size

        updates = len(self.runs) * n * self.batch
        t0 = time.monotonic()
        last_log, step0 = t0, step
        slot = 0
        while step < total:
            size = block(step)
            xi_all, prepared = self.feed.next(size, slot)
            slot = 1 - slot
            if self.feed.ahead and step + size < total:
                self.feed.prepare_ahead(block(step + size), slot)
            j = 0
            while j < size:
                while k_next < len(snaps) and snaps[k_next] == step:
                    self._record(k_next, step, prev_snap)
                    prev_snap = step
                    k_next += 1
                run = self._steps_to_event(step, size - j, k_next)
                for b, prep in zip(self.blocks, prepared, strict=True):
                    b.steps(prep, j, j + run, xi_all, step, self.feed.gate)
                if step == 0:  # snapshots at t = 0 report the first minibatch's loss
                    for b in self.blocks:
                        first = b.tally.loss_acc.cpu().numpy()
                        for k in np.flatnonzero(snaps == 0):
                            b.train_loss[:, k] = first
                step += run
                j += run
                if step % cfg.check_every == 0:
                    self._check(step, prev_snap)
            now = time.monotonic()
            if now - last_log >= cfg.log_every_s:
                rate = (step - step0) / max(now - t0, 1e-9)
                log.info(
                    "%s step %d/%d (%.1f%%), %.0f steps/s, %.2f ns per particle-sample "
                    "update, ETA %.0f s",
                    label, step, total, 100.0 * step / total, rate,
                    1e9 / max(rate * updates, 1e-9), (total - step) / max(rate, 1e-9),
                )
                last_log = now
            if self.progress is not None:
                self.progress(step, total, self._latest(k_next - 1))
            if ck_every and step % ck_every == 0 and step < total:
                self._save(checkpoint_path, meta, step, k_next, prev_snap)
        self._check(step, prev_snap)
        if ck_every and step > step0:
            # the finished state too: a job of several stacks that is stopped later resumes
            # past this one (the caller removes the file once its output is written)
            self._save(checkpoint_path, meta, step, k_next, prev_snap)
        while k_next < len(snaps):
            self._record(k_next, step, prev_snap)
            prev_snap = step
            k_next += 1
        return step


def train_stack(
    group: FiniteGroup,
    unit: Unit | ResNet,
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
    draw_dtype: str | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    draw_ahead: bool | None = None,
    normal_draws: str = "auto",
) -> StackResult:
    """Train a stack of runs sharing N and the initialisation; see the module docstring.

    ``unit`` is the model: a unit (the one-layer ensemble) or a
    :class:`~mfsym.engine.models.ResNet` (N = L·M particles, layer-major; teacher clouds
    repeated at every layer), trained by the same step loop.

    ``init_particles`` maps seed → (N, D) initial cloud (default: :func:`initial_particles`);
    ``x_eval`` is the fixed (n_eval, dx) risk sample (default: :func:`evaluation_inputs`).
    ``x_train`` (n_train, dx): instead of fresh samples, every step uses this whole fixed
    training set (full-batch gradient descent; ``batch_size`` is then ignored).
    ``subspace`` (D, D): an orthogonal projector replacing P_E wherever non-EA runs project
    their noise (SI-type starts), e.g. the candidate subspace E_j of the discovery heuristic.
    With ``checkpoint_path`` the state is saved every ``config.checkpoint_every`` steps and
    once more when the training ends, and a valid checkpoint there is resumed from (same
    final result as an uninterrupted run; a finished one trains no further step): a job
    that trains several stacks and is stopped resumes past the stacks it finished.  The
    caller removes the file once its output is written.

    ``n_particles`` is any integer ≥ 1 (Python or NumPy); ``config.T`` must give at least
    one step (``N·T ≥ 1``).  Wrong shapes, empty samples and non-finite values in the
    inputs raise ``ValueError`` naming the argument (an input problem, not a divergence).
    ``draw_dtype`` ("float32" or "float64"; default: the training dtype): the float type
    the samples and noise are drawn in before rounding to the training dtype — with
    "float64" a float32 run sees a float64 run's randomness rounded, so the two differ by
    arithmetic precision alone (the precision swap of the claims table).
    ``progress(step, total, latest)``, when given, is called after every chunk of
    ``rng_chunk`` steps; ``latest`` holds the first run's ``loss`` and ``dist`` (RMS
    distance to E^G) at the latest snapshot (empty before the first).
    ``draw_ahead`` (default: when it pays, see :func:`.chunk_feed.plans_ahead`): draw the
    next chunk's samples and noise on a thread of their own while the current chunk
    trains; the numbers, and so the result, are the same either way.
    ``normal_draws`` ("auto" or "torch"): "auto" draws the samples and noise of a CPU run
    with the native generator of :mod:`mfsym.engine.fast_normal` where it reproduces
    ``torch.randn`` bit for bit in this process (checked once per process), "torch"
    always with ``torch.randn``; the result is the same either way.
    Raises :class:`TrainingDiverged` if any run diverges (see the module docstring).
    """
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. TrainConfig(T=0.5)), not "
                        f"{type(config).__name__} {config!r:.80}")
    cfg = config or TrainConfig()
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r}; allowed: {list(INITS)}")
    n_particles = count_arg(n_particles, "N")
    cfg.total_steps(n_particles)
    if not runs:
        raise ValueError("empty stack: at least one RunSpec is needed")
    if group.dim_z != unit.dim_z:
        raise ValueError(f"group acts on D={group.dim_z} but the unit has D={unit.dim_z}")
    group.check_unit(getattr(unit, "unit", unit))  # a ResNet's layers are its unit
    for r in runs:
        if not isinstance(r, RunSpec):
            raise TypeError(f"runs must hold RunSpec(teacher, scheme, seed), not "
                            f"{type(r).__name__} {r!r:.80}")
        check_scheme(r.scheme)
        if r.teacher not in teachers:
            raise ValueError(f"unknown teacher {r.teacher!r}; available: {sorted(teachers)}")
    if len(set(runs)) != len(runs):
        raise ValueError("the stack lists the same (teacher, scheme, seed) run twice")
    check_stack_arrays(group, unit, teachers, runs, n_particles, init_particles, x_eval,
                       x_train, subspace)
    if checkpoint_path is not None and Path(checkpoint_path).is_dir():
        raise ValueError(f"checkpoint_path = {str(checkpoint_path)!r} is a folder; give the "
                         "path of a checkpoint file in it (e.g. 'run.ckpt.npz')")
    if threads is not None:
        limit_threads(count_arg(threads, "threads"))
    check_normal_draws(normal_draws)  # before any kernel is built
    draw = None
    if draw_dtype is not None:
        if draw_dtype not in ("float32", "float64"):
            raise ValueError(f"draw_dtype = {draw_dtype!r}; allowed: None, 'float32', "
                             "'float64'")
        draw = getattr(torch, draw_dtype)
    try:
        eng = _Engine(
            group, unit, teachers, list(runs), n_particles, init, cfg, init_particles, x_eval,
            x_train=x_train, subspace=subspace, draw_dtype=draw, progress=progress,
            draw_ahead=draw_ahead, normal_draws=normal_draws,
        )
        wall = eng.run(checkpoint_path, label or f"N={n_particles} init={init}")
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        raise MemoryError(
            f"training needs more memory than this machine gives it ({len(runs)} runs, "
            f"N={n_particles}, batch_size={cfg.batch_size}, n_eval={cfg.n_eval}, "
            f"rng_chunk={cfg.rng_chunk}, n_snapshots={cfg.n_snapshots}): {exc}; lower one "
            "of them or split the stack"
        ) from None
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
        backend=eng.backend,
        dtype=eng.dtype_name,
        device=str(eng.device),
    )


def _model_key(model) -> list:
    """What identifies a model type beyond its unit: ``["resnet", L, unit]``,
    ``["scaled", c, unit]`` or ``[unit]``."""
    if isinstance(model, ResNet):
        return ["resnet", model.depth, model.unit.name]
    if isinstance(model, OutputScaled):
        return ["scaled", float(model.scale), model.unit.name]
    return [model.name]
