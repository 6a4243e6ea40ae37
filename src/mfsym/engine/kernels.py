"""Force kernels: one noisy SGD step's heavy part, in interchangeable implementations.

For a stack of R runs with particles ``θ (R, N, D)`` and inputs ``x (R, S, dx)`` the engine
needs, per step,

1. ``forward``: ``Φ_N(x_s) = (1/N) Σ_n σ*(x_s, θ̃_n)`` with ``θ̃ = θ Pᵀ`` where a run's
   model is projected (EA: P = P_E), shape ``(R, S, dy)``;
2. the cotangent ``c = ∂loss/∂Φ``: with the S = m·B inputs ordered view-major
   (``s = g·B + b``) and ``o_b`` the m outputs of sample b stacked into an (m·dy)-vector,
   ``c_b = c₀ (L o_b − T_b)``: L = I for residual schemes (T = the targets g y, c₀ = 2/(mB))
   and ``L_{g,g'} = (1/m) g g'ᵀ`` for FA (T_{g,b} = g y_b), see :func:`~.eager_kernel.cotangent`;
3. ``update``: the force ``F_n = Σ_s J_n(x_s)ᵀ c_s`` (no 1/N: mean-field scaling) at θ̃
   and the new particles

       θ ← θ − lr · Π_d[F + wd·θ] + σ · Π_n ξ

   with ``Π_d = P`` for projected runs, ``Π_n`` the run's noise projector, ``lr = α/N``,
   ``wd = 2τ``, ``σ = √(2αβ/N)`` and ``ξ (N, D)`` the run's seed's Gaussian noise.

:meth:`EagerKernel.advance` does the three in turn; the native kernel does them in one
call, keeping the activation derivatives of step 1 for step 3, and
:meth:`EagerKernel.advance_many` runs K steps (views, targets and noise of each step
stacked on a leading axis): a loop of ``advance`` for eager and compile, one C call for
native.

Backends (``TrainConfig.backend``):

* ``eager``: the unit's own PyTorch code (:meth:`Unit.output_and_pullback`), the reference.
* ``native``: fused C kernels compiled for this CPU (:mod:`mfsym.engine.native`): one pass per
  phase over cache-sized chunks of particles, one activation per particle and sample,
  update fused with the force, no (R, S, N) intermediate in memory.  For the matrix, uv
  and mlp units (:class:`NativeKernel`): the step kernel, K steps per call, vectors of
  particles, its own passively waiting threads; for the mean-ODE ResNet of the matrix or
  mlp unit (:class:`DeepNativeKernel`): K whole steps per call too, each forward through
  the layers, back-propagated cotangents and each layer's update.
* ``native-v1``: the first fused C step of the one-layer units (one call per step,
  OpenMP), kept to be timed beside ``native``.
* ``compile``: the same fused formulas as PyTorch element-wise code through
  ``torch.compile`` (C++ on a CPU, Triton on a GPU).
* ``auto``: ``native`` on a CPU, ``compile`` on a GPU with Triton, else ``eager``; a
  backend that cannot be built is logged and replaced by ``eager``.

All backends compute the same mathematics and agree with ``eager`` to float rounding.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

from ..core.units import Unit
from . import native
from .compiled_kernel import CompiledKernel
from .eager_kernel import F64, EagerKernel, Tally, UpdateSpec
from .models import ResNet

log = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "native", "native-v1", "compile")

#: Units with fused kernels, by backend: the one-layer units in C and through
#: torch.compile, the mlp unit in C only.  The ResNet of a unit of
#: :data:`mfsym.engine.native.DEEP_UNITS` has fused C kernels too; every other model (the
#: output-scaled ensemble, the ResNet on the GPU) runs on the eager kernel, whatever the
#: backend asked for, with a log line.
FUSED_UNITS = {"matrix": ("native", "compile"), "uv": ("native", "compile"), "mlp": ("native",)}


def fused_backends(model) -> tuple[str, ...]:
    """The backends with a fused kernel for ``model`` (a unit or a model of
    :mod:`mfsym.engine.models`)."""
    if isinstance(model, ResNet):
        return ("native",) if model.unit.name in native.DEEP_UNITS else ()
    return FUSED_UNITS.get(model.name, ())

# ---------------------------------------------------------------------------------------
# native: fused C kernels on the CPU
# ---------------------------------------------------------------------------------------
class NativeKernel(EagerKernel):
    """Fused C kernels (:mod:`mfsym.engine.native`); CPU tensors of one dtype only.

    Inputs the kernels only read are made contiguous here when they are not; shapes,
    dtypes and devices are checked by :class:`mfsym.engine.native.NativeLibrary` before
    any pointer reaches C (``ValueError``/``TypeError`` naming the argument).
    """

    name = "native"
    late_join = True

    def __init__(self, unit: Unit, dtype: torch.dtype):
        super().__init__(unit)
        self.dtype = dtype
        self.lib = native.load_library(unit, dtype)
        self._flags: dict[int, torch.Tensor] = {}

    @staticmethod
    def _threads() -> int:
        return max(1, torch.get_num_threads())

    def _zeros_flags(self, R: int) -> torch.Tensor:
        if R not in self._flags:
            self._flags[R] = torch.zeros(R, dtype=torch.int8)
        return self._flags[R]

    def _leading(self, theta, x):
        """The leading (run) axes of ``theta (..., N, D)`` that ``x (..., S, dx)`` broadcasts
        to; ValueError naming both shapes otherwise."""
        for name, t in (("theta", theta), ("x", x)):
            if not isinstance(t, torch.Tensor) or t.dim() < 2:
                shape = native.shape_of(t)
                raise ValueError(f"{name} must be a tensor with at least 2 axes, got {shape}")
        lead = theta.shape[:-2]
        try:
            if torch.broadcast_shapes(x.shape[:-2], lead) != lead:
                raise RuntimeError
        except RuntimeError:
            raise ValueError(
                f"x {tuple(x.shape)} does not broadcast to the runs of theta "
                f"{tuple(theta.shape)}: expected (..., S, {self.unit.dx}) with leading axes "
                f"{tuple(lead)}"
            ) from None
        return lead

    def output_and_pullback(self, theta, x):
        lead = self._leading(theta, x)
        th = theta.reshape(-1, *theta.shape[-2:]).contiguous()
        xs = x.expand(*lead, *x.shape[-2:]).reshape(-1, *x.shape[-2:]).contiguous()
        R, N, D = th.shape
        eye = torch.eye(D, dtype=self.dtype).expand(R, D, D).contiguous()
        out = self.lib.output(th, xs, eye, self._zeros_flags(R), self._threads())

        def pullback(cot):
            if not isinstance(cot, torch.Tensor) or cot.shape[-2:] != out.shape[-2:]:
                shape = native.shape_of(cot)
                raise ValueError(
                    f"cot has shape {shape}; expected (..., S, dy) = (..., "
                    f"{out.shape[1]}, {out.shape[2]}) with leading axes {tuple(lead)}"
                )
            c = cot.expand(*lead, *cot.shape[-2:]).reshape(R, -1, cot.shape[-1]).contiguous()
            return self.lib.force(th, xs, c, self._threads()).reshape(*lead, N, D)

        return out.reshape(*lead, *out.shape[-2:]), pullback

    def _native_spec(self, spec: UpdateSpec, R: int, D: int):
        """Projectors, int8 flags and noise rows as contiguous arrays (cached on spec)."""
        if "native" not in spec.cache:
            eye = torch.eye(D, dtype=self.dtype).expand(R, D, D)
            off = torch.zeros(R, dtype=torch.int8)
            spec.cache["native"] = (
                (eye if spec.proj is None else spec.proj).to(self.dtype).contiguous(),
                off if spec.proj is None else spec.proj_on.to(torch.int8).contiguous(),
                (eye if spec.noise_proj is None else spec.noise_proj).to(self.dtype).contiguous(),
                off if spec.noise_proj is None else spec.noise_on.to(torch.int8).contiguous(),
                spec.noise_row.to(torch.int64).contiguous(),
            )
        return spec.cache["native"]

    def _cot_spec(self, spec: UpdateSpec, R: int, dy: int):
        """The cotangent matrices L (R, m·dy, m·dy) and int8 flags (cached on spec)."""
        if "native_cot" not in spec.cache:
            md = spec.views * dy
            if spec.cot_l is None:
                mats = torch.eye(md, dtype=self.dtype).expand(R, md, md).contiguous()
                on = torch.zeros(R, dtype=torch.int8)
            else:
                mats = spec.cot_l.to(self.dtype).contiguous()
                on = spec.cot_on.to(torch.int8).contiguous()
            spec.cache["native_cot"] = (mats, on)
        return spec.cache["native_cot"]

    def _workspace(self, key, sizes):
        """Scratch arrays of ``sizes = (reals, doubles)``, grown on demand (``key``: what
        they were sized for)."""
        if getattr(self, "_work_key", None) != key:
            have = getattr(self, "_work", None)
            if have is None or have[0].numel() < sizes[0] or have[1].numel() < sizes[1]:
                self._work = (
                    torch.empty(sizes[0], dtype=self.dtype), torch.empty(sizes[1], dtype=F64)
                )
            self._work_key = key
        return self._work

    @staticmethod
    def _dense(*tensors):
        """The tensors, copied where they are not contiguous (the kernels read them only)."""
        return [t.contiguous() if isinstance(t, torch.Tensor) else t for t in tensors]

    @staticmethod
    def _noise_rows(xi, N, D):
        """ξ (n_seeds, [K,] N, D) with each N·D block contiguous (outer axes may stride)."""
        if isinstance(xi, torch.Tensor) and xi.dim() >= 3 and xi.shape[-2:] == (N, D):
            if xi.stride()[-2:] != (D, 1):
                xi = xi.contiguous()
        return xi

    def _run_dims(self, theta):
        if not isinstance(theta, torch.Tensor) or theta.dim() != 3:
            shape = native.shape_of(theta)
            raise ValueError(f"theta must be (R, N, D) with D = {self.unit.dim_z}, got {shape}")
        return theta.shape

    def advance(self, theta, x, targets, xi, spec: UpdateSpec, tally: Tally):
        """One step: :meth:`advance_many` with K = 1 at step ``tally.step``."""
        R, N, D = self._run_dims(theta)
        for name, t in (("x", x), ("targets", targets), ("xi", xi)):
            if not isinstance(t, torch.Tensor) or t.dim() != 3:
                raise ValueError(f"{name} must be a tensor with 3 axes, got {native.shape_of(t)}")
        S = x.shape[1]
        for name, t, symbols, want in (
            ("x", x, "(R, S, dx)", (R, S, self.unit.dx)),
            ("targets", targets, "(R, S, dy)", (R, S, self.unit.dy)),
            ("xi", xi, "(n_seeds, N, D)", (xi.shape[0], N, D)),
        ):
            if tuple(t.shape) != want:
                raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {symbols} = {want}")
        return self.advance_many(theta, x[None], targets[None], xi[:, None], spec, tally,
                                 tally.step)

    def _step_inputs(self, theta, x, targets, spec: UpdateSpec):
        """What a whole-step call needs: R, N, D, the dense θ, x and targets, the
        projectors, flags and noise rows, the cotangent matrices and flags, the threads."""
        R, N, D = self._run_dims(theta)
        theta, x, targets = self._dense(theta, x, targets)
        proj, on, nproj, non, rows = self._native_spec(spec, R, D)
        mats, cot_on = self._cot_spec(spec, R, self.unit.dy)
        return (R, N, D, theta, x, targets, proj, on, nproj, non, rows, mats, cot_on,
                self._threads())

    def advance_many(self, theta, x, targets, xi, spec: UpdateSpec, tally: Tally, step0: int,
                     gate=None):
        """K whole steps in one native call (``mfsym_steps``; with a ``gate`` from
        :meth:`gate`, its late joiners wait at it); returns the new particles."""
        R, N, D, theta, x, targets, proj, on, nproj, non, rows, mats, cot_on, threads = \
            self._step_inputs(theta, x, targets, spec)
        S = x.shape[2] if isinstance(x, torch.Tensor) and x.dim() == 4 else 1
        work, partw = self._workspace(
            ("steps", R, N, S, threads), self.lib.steps_workspace(R, N, max(S, 1), threads)
        )
        return self.lib.steps(
            theta, x, targets, spec.views, mats, cot_on, spec.c0, self._noise_rows(xi, N, D),
            rows, proj, on, nproj, non, spec.lr, spec.wd, spec.sigma, tally.loss_acc,
            tally.first_bad, step0, work, partw, threads, gate=gate,
        )

    def gate(self, first: int):
        """A gate for :meth:`advance_many` (``native.Gate``): the kernel's threads from id
        ``first`` on wait at it while it is closed."""
        return self.lib.gate(first)

    def forward(self, theta, x, spec: UpdateSpec):
        R, _, D = self._run_dims(theta)
        theta, x = self._dense(theta, x)
        proj, on, _, _, _ = self._native_spec(spec, R, D)
        return self.lib.output(theta, x, proj, on, self._threads()), (theta, x)

    def force(self, ctx, cot):
        theta, x = ctx
        return self.output_and_pullback(theta, x)[1](cot)

    def update(self, ctx, cot, theta, xi, spec: UpdateSpec):
        _, x = ctx
        R, N, D = self._run_dims(theta)
        theta, cot = self._dense(theta, cot)
        proj, on, nproj, non, rows = self._native_spec(spec, R, D)
        return self.lib.step(
            theta, x, cot, self._noise_rows(xi, N, D), rows, proj, on, nproj, non,
            spec.lr, spec.wd, spec.sigma, self._threads(),
        )


class NativeV1Kernel(NativeKernel):
    """The first fused C step (``mfsym_fused``): one call per step, OpenMP threads,
    8-lane scalar code the compiler vectorises.  Kept selectable (backend
    ``native-v1``) so that benchmarks time it beside :class:`NativeKernel` in one run."""

    name = "native-v1"
    late_join = False

    def advance(self, theta, x, targets, xi, spec: UpdateSpec, tally: Tally):
        """The whole step in one call (see ``mfsym_fused``); returns the new particles."""
        R, N, D, theta, x, targets, proj, on, nproj, non, rows, mats, cot_on, threads = \
            self._step_inputs(theta, x, targets, spec)
        S = x.shape[1] if isinstance(x, torch.Tensor) and x.dim() == 3 else 1
        reals, doubles = self.lib.workspace_sizes(N, max(S, 1))
        work, partw = self._workspace(("fused", N, S, threads),
                                      (threads * reals, threads * doubles))
        _, new = self.lib.fused(
            theta, x, targets, spec.views, mats, cot_on, spec.c0,
            self._noise_rows(xi, N, D), rows, proj, on, nproj, non, spec.lr, spec.wd,
            spec.sigma, tally.loss_acc, tally.first_bad, tally.step, work, partw, threads,
        )
        return new

    advance_many = EagerKernel.advance_many


class DeepNativeKernel(NativeV1Kernel):
    """The fused C steps of the mean-ODE ResNet (``mfsym_deep_steps``, see
    :mod:`mfsym.engine.native`): θ (R, L·M, D) layer-major, x and targets (R, S, d).

    :meth:`advance_many` is :class:`NativeKernel`'s (one call for K steps, each: forward
    through the L layers, the scheme's cotangent, the back-propagated δ_l, each layer's
    force and update; with a :meth:`gate`, ``mfsym_deep_steps_gated``, whose threads past
    the first join once the chunk drawn ahead is done) and :meth:`output` the C forward of
    the (projected) model; the per-particle pull-back (``output_and_pullback``,
    ``forward``/``force``/``update``) is the eager reference.
    """

    name = "native"
    advance = NativeKernel.advance
    advance_many = NativeKernel.advance_many
    late_join = True  # mfsym_deep_steps_gated

    def __init__(self, model: ResNet, dtype: torch.dtype):
        EagerKernel.__init__(self, model)
        self.dtype = dtype
        self.lib = native.load_deep_library(model, dtype)
        self._flags = {}

    output_and_pullback = EagerKernel.output_and_pullback
    forward = EagerKernel.forward
    force = EagerKernel.force
    update = EagerKernel.update

    def output(self, theta, x, spec: UpdateSpec):
        """Φ = h_L of each run's (projected) model, (R, S, d)."""
        return NativeKernel.forward(self, theta, x, spec)[0]


def native_kernel(model, dtype: torch.dtype, first: bool = False) -> NativeKernel:
    """The native kernel of ``model``: the ResNet's, or the step kernel of a one-layer
    unit (``first``: its first kernel, backend ``native-v1``)."""
    if isinstance(model, ResNet):
        return DeepNativeKernel(model, dtype)
    if first:
        return NativeV1Kernel(model, dtype)
    return NativeKernel(model, dtype)


class _Fallback(EagerKernel):
    """``auto`` on a GPU: the compiled kernel, replaced for good by eager if it fails."""

    def __init__(self, unit: Unit, primary: EagerKernel):
        super().__init__(unit)
        self.primary = primary
        self.name = primary.name

    def _try(self, method, *args):
        if self.primary is not None:
            try:
                return getattr(self.primary, method)(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: fall back
                log.warning("backend %s failed (%s); falling back to eager", self.name, exc)
                self.primary, self.name = None, "eager"
        return getattr(EagerKernel, method)(self, *args)

    def output_and_pullback(self, theta, x):
        return self._try("output_and_pullback", theta, x)

    def advance(self, theta, x, targets, xi, spec, tally):
        return self._try("advance", theta, x, targets, xi, spec, tally)

    def output(self, theta, x, spec):
        return self._try("output", theta, x, spec)


class _Collect(logging.Handler):
    def __init__(self, notes: list[str]):
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(record.getMessage())


@contextlib.contextmanager
def collect_warnings(notes: list[str]) -> Iterator[None]:
    """Append the warnings of this module (its fallbacks) to ``notes`` while the block runs."""
    handler = _Collect(notes)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton

        return bool(has_triton())
    except ImportError:  # pragma: no cover - very old torch
        return False


def select_kernel(
    unit: Unit, backend: str, device: torch.device, dtype: torch.dtype = torch.float32
):
    """The force kernel for ``unit`` on ``device`` in ``dtype``.

    Raises ``ValueError`` naming the allowed backends for an unknown name, and
    :class:`mfsym.engine.native.NativeUnavailable` when ``native`` is requested explicitly but
    cannot be built or does not apply (GPU tensors).  A model without a fused kernel for
    the backend (:func:`fused_backends`; ``auto``: on a GPU, ``compile``) gets the eager
    kernel and a warning.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {list(BACKENDS)}")
    device = torch.device(device)
    if backend == "eager":
        return EagerKernel(unit)
    fused = fused_backends(unit)
    wanted = backend if backend != "auto" else ("native" if device.type == "cpu" else "compile")
    if wanted == "native-v1":
        wanted = "native"
    if wanted not in fused:
        log.warning(
            "backend %r has no fused kernel for the %s model (%s: %s); using eager",
            backend, unit.name, wanted,
            "one-layer units " + ", ".join(u for u, b in FUSED_UNITS.items() if wanted in b)
            + (f"; ResNets of {', '.join(native.DEEP_UNITS)}" if wanted == "native" else ""),
        )
        return EagerKernel(unit)
    if backend in ("native", "native-v1"):
        if device.type != "cpu":
            raise native.NativeUnavailable(
                f"backend {backend!r} runs on the CPU only, the device is {device}"
            )
        return native_kernel(unit, dtype, first=backend == "native-v1")
    if backend == "compile":
        return CompiledKernel(unit)
    # auto
    if device.type == "cpu":
        try:
            return native_kernel(unit, dtype)
        except native.NativeUnavailable as exc:
            log.warning("native kernels unavailable (%s); using eager", exc)
            return EagerKernel(unit)
    if _has_triton():
        return _Fallback(unit, CompiledKernel(unit))
    log.warning("no Triton for torch.compile on %s; using eager", device)
    return EagerKernel(unit)
