"""The pieces of one training stack: random streams per seed and blocks of runs.

A *block* holds the runs of a stack that see the same number m of views per sample
(m = 1: vanilla, random-g DA, EA; m = |G|: FA, orbit-averaged DA).  Its particles are one
tensor ``θ (R, N, D)``; every step it evaluates the model on the views of the minibatch,
forms the scheme's loss and cotangent (``mfsym.core.schemes``) and lets the force kernel
(``mfsym.engine.kernels``) apply the noisy SGD update of PAPER.md §4.

All per-sample work that does not involve the particles (teacher targets, group views)
is done once per chunk of ``rng_chunk`` steps.  Every operation acts on each run on its
own (element-wise products and sums over fixed small axes, no matrix products across
runs), so a run's numbers do not depend on the other runs of its stack.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..core.compact import QuadratureGroup
from ..core.schemes import projects_drift, projects_noise, resolve_scheme, uses_orbit
from .fast_normal import MIN_NUMBERS, check_normal_draws, native_normal
from .kernels import Tally, UpdateSpec


class IndexElements:
    """Random-g DA on a finite group: one index ``g ~ U{0..|G|−1}`` per sample.

    ``draw`` fills a long buffer ``(k, B)``; ``keep`` replaces the draws of non-DA runs
    ``(R, k, B)`` by the identity; ``matrices`` gives the drawn elements on X and Y,
    ``(R, k, B, dx, dx)`` and ``(R, k, B, dy, dy)``.
    """

    def __init__(self, group, device, dtype):
        self.order = group.order
        self.gx = torch.tensor(group.x, device=device, dtype=dtype)
        self.gy = torch.tensor(group.y, device=device, dtype=dtype)
        self.identity = torch.tensor(group.identity_index(), device=device)

    def buffer(self, n_seeds, size, bsz, device, dtype):
        return torch.empty(n_seeds, size, bsz, dtype=torch.long, device=device)

    def draw(self, gen, out):
        torch.randint(0, self.order, out.shape, generator=gen, out=out)

    def keep(self, g, is_da):
        return torch.where(is_da[:, None, None], g, self.identity)

    def matrices(self, g):
        return self.gx[g], self.gy[g]


class HaarElements:
    """Random-g DA on a compact group: one Haar element per sample, drawn as uniforms
    ``(k, B, p)`` from the seed's stream (:meth:`mfsym.core.compact.RotationXY.draw`); the
    parameters 0 of non-DA runs give the identity exactly."""

    def __init__(self, haar):
        self.haar = haar

    def buffer(self, n_seeds, size, bsz, device, dtype):
        return torch.empty(n_seeds, size, bsz, self.haar.n_params, dtype=dtype, device=device)

    def draw(self, gen, out):
        self.haar.draw(gen, out)

    def keep(self, g, is_da):
        return torch.where(is_da[:, None, None, None], g, torch.zeros_like(g))

    def matrices(self, g):
        mats = self.haar.torch_matrices(g)
        return mats, mats


def group_elements(group, device, dtype):
    """The per-sample DA draw of ``group``: Haar elements for the quadrature subgroup of a
    compact group, uniform indices for every other finite group."""
    if isinstance(group, QuadratureGroup):
        return HaarElements(group.haar)
    return IndexElements(group, device, dtype)


class Streams:
    """One ``torch.Generator`` per stream, seeded with ``torch_seeds`` (one per stream: a
    seed's common stream, or a tagged one; ``mfsym.engine.training``, "Randomness").
    Below, "seed" means a stream.

    A chunk of ``k`` steps is drawn per seed in this order: inputs ``x (k, B, dx)`` (unless
    a fixed training set is given), the DA group draws ``g`` (``elements``: indices
    ``(k, B)`` of a finite group, Haar uniforms ``(k, B, p)`` of a compact one) and noise
    ``ξ (k, N, D)``;
    :meth:`next_chunk` returns them stacked over seeds, in buffers reused from chunk to
    chunk.  Seeds are drawn on parallel threads when that pays; each generator is used by
    one thread in a fixed order, so the numbers do not depend on the threading.
    ``draw_dtype`` (default: the training dtype) is the float type the normal numbers are
    drawn in before they are rounded to the training dtype; the group draws ``g`` are
    drawn as before.  ``normal_draws``: "auto" draws the large normal blocks of a CPU
    generator with :mod:`mfsym.engine.fast_normal` where that reproduces ``torch.randn``
    bit for bit in this process, "torch" always with ``torch.randn``; the numbers are the
    same either way.
    """

    PARALLEL_MIN = 1 << 16  # numbers per seed and chunk above which seeds draw in parallel

    def __init__(self, torch_seeds, n_particles, config, group, device, dtype, x_train=None,
                 elements=None, draw_dtype=None, normal_draws="auto"):
        self.x_train = x_train
        self.n, self.cfg, self.device, self.dtype = n_particles, config, device, dtype
        self.draw_dtype = draw_dtype or dtype
        self.native = (native_normal(self.draw_dtype)
                       if check_normal_draws(normal_draws) == "auto" and device.type == "cpu"
                       else None)
        self.dx, self.dz = group.dim_x, group.dim_z
        self.elements = elements or group_elements(group, device, dtype)
        self.gens = []
        for s in torch_seeds:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(s))
            self.gens.append(gen)
        self._buffers = [None, None]  # two sets: see next_chunk
        self._pool = None

    def _draw(self, i: int, lo: int, hi: int, buffers) -> None:
        """Seed ``i``'s chunk of steps ``lo … hi − 1`` of the buffers: x, g, then ξ."""
        gen, (xb, gb, xib) = self.gens[i], buffers
        if self.x_train is not None:
            xb[i, lo:hi].copy_(self.x_train.expand(hi - lo, -1, -1))
        else:
            self._normal(gen, xb[i, lo:hi])
            xb[i, lo:hi].mul_(self.cfg.input_std)
        self.elements.draw(gen, gb[i, lo:hi])
        self._normal(gen, xib[i, lo:hi])

    def _draw_chunks(self, i: int, size: int, chunk: int, buffers) -> None:
        """Seed ``i``'s chunks of ``chunk`` steps, one after the other, filling steps
        ``0 … size − 1``."""
        for lo in range(0, size, chunk):
            self._draw(i, lo, lo + chunk, buffers)

    def _normal(self, gen, out) -> None:
        """Standard normal numbers into ``out``, drawn in ``draw_dtype`` and rounded to the
        training dtype when they differ (then a float32 run sees the float64 run's samples
        and noise, rounded); natively when that is on and the block it draws into is
        contiguous and large enough (``torch.randn`` into a strided tensor draws other
        numbers, so such a block stays torch's)."""
        if self.draw_dtype == out.dtype:
            drawn = out
        else:
            drawn = torch.empty(out.shape, dtype=self.draw_dtype, device=out.device)
        if (self.native is not None and drawn.numel() >= MIN_NUMBERS
                and drawn.is_contiguous()):
            self.native.fill(gen, drawn)
        else:
            torch.randn(out.shape, generator=gen, out=drawn)
        if drawn is not out:
            out.copy_(drawn)

    def _slot(self, k: int, size: int):
        """Buffer set ``k`` (0 or 1), holding at least ``size`` steps."""
        S = len(self.gens)
        bsz = self.x_train.shape[0] if self.x_train is not None else self.cfg.batch_size
        if self._buffers[k] is None or self._buffers[k][2].shape[1] < size:
            kw = {"device": self.device, "dtype": self.dtype}
            self._buffers[k] = (
                torch.empty(S, size, bsz, self.dx, **kw),
                self.elements.buffer(S, size, bsz, self.device, self.dtype),
                torch.empty(S, size, self.n, self.dz, **kw),
            )
        return self._buffers[k]

    def next_chunk(self, size: int, slot: int = 0, chunk: int | None = None):
        """``x (n_seeds, k, B, dx)``, ``g (n_seeds, k, B[, p])``, ``ξ (n_seeds, k, N, D)``,
        drawn into buffer set ``slot`` (0 or 1: a caller that draws the next chunk while
        it still uses this one alternates them).

        With ``chunk`` (a divisor of ``size``), the k = ``size`` steps are ``size / chunk``
        chunks of ``chunk`` steps drawn one after the other, each in the order above: the
        numbers of as many calls with ``size = chunk``, laid end to end."""
        chunk = size if chunk is None else chunk
        if chunk < 1 or size % chunk:
            raise ValueError(f"chunk = {chunk} steps must divide size = {size}")
        buffers = self._slot(slot, size)
        S = len(self.gens)
        threads = min(S, torch.get_num_threads())
        big = chunk * self.n * self.dz >= self.PARALLEL_MIN
        if threads > 1 and self.device.type == "cpu" and big:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=threads)
            list(self._pool.map(lambda i: self._draw_chunks(i, size, chunk, buffers),
                                range(S)))
        else:
            for i in range(S):  # one draw per seed and chunk, not per step or run
                self._draw_chunks(i, size, chunk, buffers)
        return tuple(b[:, :size] for b in buffers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def get_state(self) -> np.ndarray:
        return np.stack([g.get_state().cpu().numpy() for g in self.gens])

    def set_state(self, states: np.ndarray) -> None:
        for gen, st in zip(self.gens, states, strict=True):
            gen.set_state(torch.from_numpy(np.ascontiguousarray(st)).to(torch.uint8))


def apply(mats: torch.Tensor, vecs: torch.Tensor) -> torch.Tensor:
    """``(M v)_i = Σ_j M_ij v_j`` broadcast over leading axes: mats (..., d, d), vecs (..., d)."""
    return (mats * vecs.unsqueeze(-2)).sum(-1)


class Block:
    """Runs of one stack with the same number m of views per sample (see module docstring)."""

    def __init__(self, idx, runs, stream_index, eng):
        self.idx = np.asarray(idx)  # positions in the full stack
        self.runs = runs
        self.eng = eng
        cfg, dev, dt, group = eng.cfg, eng.device, eng.dtype, eng.group
        resolved = [resolve_scheme(r.scheme, cfg.da_mode) for r in runs]
        schemes = [s for s, _ in resolved]  # engine schemes (a variant's DA mode is its own)
        self.m = group.order if uses_orbit(*resolved[0]) else 1
        R = len(runs)
        self.ridx = torch.tensor([stream_index[r] for r in runs], device=dev)
        self.is_da = torch.tensor([s == "DA" for s in schemes], device=dev)
        self.any_da = bool(self.is_da.any()) and self.m == 1
        self.is_fa = torch.tensor([s == "FA" for s in schemes], device=dev)
        self.any_fa, self.all_fa = bool(self.is_fa.any()), bool(self.is_fa.all())
        self.spec = self._update_spec(schemes, R)
        self.pair = torch.tensor([eng.pair_index[r] for r in runs], device=dev)
        init = np.stack([eng.init_particles[r.seed] for r in runs])
        drift = np.array([projects_drift(s) for s in schemes])
        if drift.any():
            init = np.where(drift[:, None, None], init @ group.reynolds(), init)
        self.initial = init
        self.theta = torch.as_tensor(init, device=dev, dtype=dt).clone()
        # recorder
        K = len(eng.snap_steps)
        self.train_loss = np.zeros((R, K))
        self.risk = np.zeros((R, K))
        self.rmd_proj = np.zeros((R, K))
        self.dist = np.zeros((R, K))
        self.snaps = np.zeros((R, K, eng.n, group.dim_z)) if cfg.keep_particle_snapshots else None
        self.tally = Tally(
            torch.zeros(R, device=dev, dtype=torch.float64),
            torch.full((R,), -1, dtype=torch.long, device=dev),
        )
        self.y_eval = eng.y_eval[[eng.teacher_names.index(r.teacher) for r in runs]]
        # references of the divergence check (mfsym.engine.training, "Divergence")
        teacher_rms = [_rms(eng.teachers[r.teacher].particles) for r in runs]
        floor = cfg.init_std * math.sqrt(group.dim_z)
        self.scale_ref = np.maximum(np.maximum(_rms(init), teacher_rms), floor)
        self.zero_risk = (self.y_eval.to(torch.float64) ** 2).sum(-1).mean(-1).cpu().numpy()

    def _update_spec(self, schemes, R) -> UpdateSpec:
        """Step constants: lr = α/N, wd = 2τ, σ = √(2αβ/N) and the per-run projectors."""
        eng, cfg, dev = self.eng, self.eng.cfg, self.eng.device
        eye = torch.eye(eng.group.dim_z, device=dev, dtype=eng.dtype)
        drift = [projects_drift(s) for s in schemes]
        noise = [projects_noise(s, eng.init) for s in schemes]
        noise_p = [eng.p_e if d else eng.p_sub for d in drift]
        p_drift = torch.stack([eng.p_e if d else eye for d in drift])
        p_noise = torch.stack([p if on else eye for on, p in zip(noise, noise_p, strict=True)])
        return UpdateSpec(
            lr=cfg.alpha / eng.n,
            wd=2.0 * cfg.tau,
            sigma=math.sqrt(2.0 * cfg.alpha * cfg.beta / eng.n),
            proj=p_drift if any(drift) else None,
            proj_on=torch.tensor(drift, device=dev),
            noise_proj=p_noise if any(noise) else None,
            noise_on=torch.tensor(noise, device=dev),
            noise_row=self.ridx,
            views=self.m,
            c0=2.0 / (self.m * eng.batch),
            cot_l=self._fa_matrices(R) if self.any_fa else None,
            cot_on=self.is_fa,
        )

    def _fa_matrices(self, R):
        """FA's cotangent map ``L_{g,g'} = (1/m) g g'ᵀ`` (blocks of the Y action), per run."""
        gy = self.eng.gy
        m, dy = self.m, gy.shape[-1]
        blocks = (gy[:, None, :, None, :] * gy[None, :, None, :, :]).sum(-1) / m  # g g'ᵀ
        mat = blocks.permute(0, 2, 1, 3).reshape(m * dy, m * dy)
        return mat.expand(R, -1, -1).contiguous()

    def _orbit(self, mats, v, drawn):
        """``v (R, ..., S, d)`` seen by the model: all |G| images ``M_g v`` (m = |G|), the
        sample's drawn ``M_{g_b} v_b`` (random-g DA; ``drawn (R, ..., S, d, d)``) or v
        itself: ``(R, ..., m, S, d)``."""
        if self.m > 1:
            return apply(mats[:, None], v.unsqueeze(-3))
        if self.any_da:
            return apply(drawn, v).unsqueeze(-3)
        return v.unsqueeze(-3)

    def _fa_model(self, out):
        """FA's model ``Φ̂ = (1/m) Σ_g g⁻¹ out_g`` from views ``out (R, ..., m, S, dy)``."""
        gyt = self.eng.gy.transpose(1, 2)[:, None]
        return apply(gyt, out).sum(-3) / self.m

    def prepare(self, x_all, g_all, y_all, size: int):
        """Views and targets of the next ``size`` steps from a chunk of the streams:
        ``x_all (n_seeds, k, B, dx)``, the DA draws ``g_all (n_seeds, k, B[, p])`` and the
        teacher outputs ``y_all (n_pairs, k, B, dy)`` of every (teacher, seed) pair.
        Returns ``(views (k, R, m·B, dx), targets (k, R, m·B, dy))``, both new tensors."""
        xs = x_all[self.ridx, :size]  # (R, k, B, dx)
        drawn_x = drawn_y = None
        if self.any_da:
            g = self.eng.elements.keep(g_all[self.ridx, :size], self.is_da)
            drawn_x, drawn_y = self.eng.elements.matrices(g)
        R, k, B, dx = xs.shape
        y = y_all[self.pair, :size]
        views = self._orbit(self.eng.gx, xs, drawn_x)  # (R, k, m, B, dx)
        targets = self._orbit(self.eng.gy, y, drawn_y)  # (R, k, m, B, dy)
        return (views.transpose(0, 1).reshape(k, R, self.m * B, dx).contiguous(),
                targets.transpose(0, 1).reshape(k, R, self.m * B, -1).contiguous())

    def steps(self, prepared, j0: int, j1: int, xi_all, step0: int, gate=None):
        """Steps ``j0 … j1 − 1`` of a prepared chunk (:meth:`prepare`) for every run of the
        block, the first at global step ``step0`` (``xi_all (n_seeds, k, N, D)``: the
        chunk's noise); ``gate``: the kernel's, when some of its threads join late."""
        views, targets = prepared
        self.tally.step = step0
        self.theta = self.eng.kernel.advance_many(
            self.theta, views[j0:j1], targets[j0:j1], xi_all[:, j0:j1], self.spec,
            self.tally, step0, gate=gate,
        )

    # -- measurements ---------------------------------------------------------------------
    def population_risk(self, theta) -> np.ndarray:
        """Monte-Carlo risk ``mean_x ‖Φ̂(x) − y(x)‖²`` of each run's model, shape (R,).

        Per-sample errors are computed in chunks and summed in float64 once, in a fixed
        order, so the value does not depend on the chunking.
        """
        eng = self.eng
        R, n = theta.shape[0], eng.n
        n_eval = eng.x_eval.shape[1]
        chunk = max(1, int(4e6 // max(1, R * n * self.m * eng.group.dim_y)))
        errs = []
        for start in range(0, n_eval, chunk):
            xs = eng.x_eval[:, start : start + chunk].expand(R, -1, -1)
            y = self.y_eval[:, start : start + chunk]
            S, dx = xs.shape[1], xs.shape[2]
            # the model on raw inputs; all |G| views when FA/orbit-DA need them
            views = apply(eng.gx[:, None], xs.unsqueeze(-3)) if self.m > 1 else xs
            out = eng.kernel.output(theta, views.reshape(R, self.m * S, dx), self.spec)
            out = out.reshape(R, self.m, S, -1)
            if self.m > 1:
                plain = out[:, eng.identity_index]
                pred = torch.where(self.is_fa[:, None, None], self._fa_model(out), plain)
            else:
                pred = out[:, 0]
            errs.append(((pred - y) ** 2).sum(-1).to(torch.float64).cpu().numpy())
        return np.concatenate(errs, axis=1).sum(axis=1) / n_eval

    def record(self, k, step_now, prev_step):
        """Snapshot ``k``: train loss over the window, risk, RMD to P_E#ν, distance to E^G."""
        eng, theta = self.eng, self.theta
        count = step_now - prev_step
        if count > 0:
            self.train_loss[:, k] = (self.tally.loss_acc / count).cpu().numpy()
        elif k > 0:
            self.train_loss[:, k] = self.train_loss[:, k - 1]
        self.tally.loss_acc.zero_()
        self.risk[:, k] = self.population_risk(theta)
        th = theta.to(torch.float64)
        proj = _rows_times(th, eng.p_e64)
        w2 = ((th - proj) ** 2).sum(-1).mean(-1)
        m2 = 2.0 * (th**2).sum(-1).mean(-1) + 2.0 * (proj**2).sum(-1).mean(-1)
        ratio = torch.where(m2 > 0, w2 / torch.where(m2 > 0, m2, 1.0), 0.0)
        self.rmd_proj[:, k] = ratio.clamp(0, 1).sqrt().cpu().numpy()
        self.dist[:, k] = w2.sqrt().cpu().numpy()
        if self.snaps is not None:
            self.snaps[:, k] = th.cpu().numpy()

    def growth(self, window: int, factor: float) -> dict[int, tuple[str, float, float]]:
        """Runs grown past ``factor`` × their reference: run index → (quantity, value,
        reference).  ``window``: steps whose losses ``loss_acc`` holds (0: no loss check)."""
        rms = _rms(self.theta.to(torch.float64)).cpu().numpy()
        out = {}
        for i in np.flatnonzero(rms > factor * self.scale_ref):
            out[int(i)] = ("particle RMS", float(rms[i]), float(self.scale_ref[i]))
        if window > 0:
            loss = self.tally.loss_acc.cpu().numpy() / window
            ref = np.maximum(self.risk[:, 0], self.zero_risk)
            for i in np.flatnonzero(loss > factor * ref):
                out.setdefault(int(i), ("training loss", float(loss[i]), float(ref[i])))
        return out

    # -- checkpoint state -------------------------------------------------------------------
    def state(self, prefix):
        out = {
            f"{prefix}theta": self.theta.cpu().numpy().copy(),
            f"{prefix}train_loss": self.train_loss,
            f"{prefix}risk": self.risk,
            f"{prefix}rmd_proj": self.rmd_proj,
            f"{prefix}dist": self.dist,
            f"{prefix}loss_acc": self.tally.loss_acc.cpu().numpy(),
            f"{prefix}first_bad": self.tally.first_bad.cpu().numpy(),
        }
        if self.snaps is not None:
            out[f"{prefix}snaps"] = self.snaps
        return out

    def load_state(self, arrays, prefix):
        dev = self.theta.device
        self.theta = torch.as_tensor(arrays[f"{prefix}theta"], device=dev).clone()
        self.train_loss = arrays[f"{prefix}train_loss"].copy()
        self.risk = arrays[f"{prefix}risk"].copy()
        self.rmd_proj = arrays[f"{prefix}rmd_proj"].copy()
        self.dist = arrays[f"{prefix}dist"].copy()
        self.tally.loss_acc.copy_(torch.as_tensor(arrays[f"{prefix}loss_acc"]))
        self.tally.first_bad.copy_(torch.as_tensor(arrays[f"{prefix}first_bad"]))
        if self.snaps is not None:
            self.snaps = arrays[f"{prefix}snaps"].copy()


def _rows_times(v: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Row vectors times a matrix, ``(v P)_d = Σ_e v_e P[e, d]``, per row on its own."""
    return (v.unsqueeze(-1) * P).sum(-2)


def _rms(theta):
    """RMS of the particles of each run, ``(..., N, D)`` → ``(...)`` (NumPy or torch)."""
    return ((theta**2).sum(-1).mean(-1)) ** 0.5
