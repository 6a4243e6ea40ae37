"""Force kernels: one noisy SGD step's heavy part, in interchangeable implementations.

For a stack of R runs with particles ``θ (R, N, D)`` and inputs ``x (R, S, dx)`` the engine
needs, per step,

1. ``forward``: ``Φ_N(x_s) = (1/N) Σ_n σ*(x_s, θ̃_n)`` with ``θ̃ = θ Pᵀ`` where a run's
   model is projected (EA: P = P_E), shape ``(R, S, dy)``;
2. the cotangent ``c = ∂loss/∂Φ``: with the S = m·B inputs ordered view-major
   (``s = g·B + b``) and ``o_b`` the m outputs of sample b stacked into an (m·dy)-vector,
   ``c_b = c₀ (L o_b − T_b)``: L = I for residual schemes (T = the targets g y, c₀ = 2/(mB))
   and ``L_{g,g'} = (1/m) g g'ᵀ`` for FA (T_{g,b} = g y_b), see :func:`cotangent`;
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
  update fused with the force, no (R, S, N) intermediate in memory.  For the matrix and
  uv units (:class:`NativeKernel`): the step kernel, K steps per call, vectors of
  particles, its own passively waiting threads; for the mlp unit and the mean-ODE ResNet
  of the matrix or mlp unit (:class:`NativeStepwiseKernel`, :class:`DeepNativeKernel`:
  forward through the layers, back-propagated cotangents and each layer's update in the
  same call): one whole step per call.
* ``native-v1``: the first fused C step of the one-layer units (one call per step,
  OpenMP), kept to be timed beside ``native``.
* ``compile``: the same fused formulas as PyTorch element-wise code through
  ``torch.compile`` (C++ on a CPU, Triton on a GPU).
* ``auto``: ``native`` on a CPU, ``compile`` on a GPU with Triton, else ``eager``; a
  backend that cannot be built is logged and replaced by ``eager``.

All backends compute the same mathematics and agree with ``eager`` to float rounding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..core.units import Unit
from . import native
from .models import ResNet

log = logging.getLogger(__name__)

F64 = torch.float64

BACKENDS = ("auto", "eager", "native", "native-v1", "compile")

#: Units with fused kernels, by backend: the one-layer units in C and through
#: torch.compile, the mlp unit in C only.  The ResNet of a unit of
#: :data:`mfsym.engine.native.DEEP_UNITS` has fused C kernels too; every other model (the
#: output-scaled ensemble, the ResNet on the GPU) runs on the eager kernel, whatever the
#: backend asked for, with a log line.
FUSED_UNITS = {"matrix": ("native", "compile"), "uv": ("native", "compile"), "mlp": ("native",)}
#: Units the step kernel (``mfsym_steps``, K steps per call) serves.
STEP_KERNEL_UNITS = ("matrix", "uv")


def fused_backends(model) -> tuple[str, ...]:
    """The backends with a fused kernel for ``model`` (a unit or a model of
    :mod:`mfsym.engine.models`)."""
    if isinstance(model, ResNet):
        return ("native",) if model.unit.name in native.DEEP_UNITS else ()
    return FUSED_UNITS.get(model.name, ())

#: Above this many samples per step the compiled force sums over samples in a loop
#: instead of unrolling them.
UNROLL_MAX_SAMPLES = 64


@dataclass
class UpdateSpec:
    """Constants of a stack's update (see the module docstring).

    proj: (R, D, D) model/drift projectors or None when no run projects; proj_on: (R,) bool;
    noise_proj: (R, D, D) noise projectors or None; noise_on: (R,) bool; noise_row: (R,)
    long, the row of the noise tensor each run reads (its seed); views: m, the views per
    sample; c0, cot_l (R, m·dy, m·dy) or None (L = I for all) and cot_on (R,) bool: the
    cotangent ``c₀ (L o − T)`` (L = I where cot_on is false).
    """

    lr: float
    wd: float
    sigma: float
    proj: torch.Tensor | None
    proj_on: torch.Tensor
    noise_proj: torch.Tensor | None
    noise_on: torch.Tensor
    noise_row: torch.Tensor
    views: int = 1
    c0: float = 1.0
    cot_l: torch.Tensor | None = None
    cot_on: torch.Tensor | None = None
    cache: dict = field(default_factory=dict, repr=False)

    def model_particles(self, theta: torch.Tensor) -> torch.Tensor:
        """θ̃ = θ Pᵀ for every run (identity rows leave θ unchanged exactly)."""
        return theta if self.proj is None else theta @ self.proj.transpose(1, 2)


@dataclass
class Tally:
    """Per-run loss bookkeeping of a step loop: ``loss_acc`` (R,) float64 sums the minibatch
    losses, ``first_bad`` (R,) int64 holds the first ``step`` whose loss was not finite
    (−1 while none).  Both are updated in place."""

    loss_acc: torch.Tensor
    first_bad: torch.Tensor
    step: int = 0

    def add(self, loss: torch.Tensor) -> None:
        self.loss_acc.add_(loss)
        self.first_bad.masked_fill_(~torch.isfinite(loss) & (self.first_bad < 0), self.step)


def cotangent(out: torch.Tensor, targets: torch.Tensor, spec: UpdateSpec):
    """Loss (R,) and cotangent ``c_s = c₀ e_s``, ``e_s = L o_b − T_s``, for outputs and
    targets ``(R, m·B, dy)`` (view-major).

    The loss is ``Σ_s ‖e_s‖² / (mB)``: the residual loss, and for FA (orthogonal g, so
    ``‖(L o − T)_{g,b}‖ = ‖Φ̂(x_b) − y_b‖``) the loss ``Σ_b ‖Φ̂(x_b) − y_b‖² / B``.
    """
    R, S, dy = out.shape
    if spec.cot_l is None:
        e = out - targets
    else:
        m = spec.views
        B = S // m
        o = out.reshape(R, m, B, dy).transpose(1, 2).reshape(R, B, m * dy)
        lo = (spec.cot_l[:, None] * o[:, :, None, :]).sum(-1)
        lo = lo.reshape(R, B, m, dy).transpose(1, 2).reshape(R, S, dy)
        e = torch.where(spec.cot_on[:, None, None], lo, out) - targets
    loss = (e * e).to(F64).sum(-1).sum(-1) / S
    return loss, spec.c0 * e


# ---------------------------------------------------------------------------------------
# eager: the reference
# ---------------------------------------------------------------------------------------
class EagerKernel:
    """The unit's PyTorch implementation; the update composed of tensor operations."""

    name = "eager"
    #: whether :meth:`gate` gives a gate for :meth:`advance_many` (threads that join late)
    late_join = False

    def __init__(self, unit: Unit):
        self.unit = unit

    def output_and_pullback(self, theta, x):
        return self.unit.output_and_pullback(theta, x)

    def forward(self, theta, x, spec: UpdateSpec):
        out, pullback = self.unit.output_and_pullback(spec.model_particles(theta), x)
        return out, pullback

    def force(self, ctx, cot):
        return ctx(cot)

    def update(self, ctx, cot, theta, xi, spec: UpdateSpec):
        """New particles from the force ``ctx(cot)`` and noise rows ``xi (n_seeds, N, D)``."""
        drift = self.force(ctx, cot) + spec.wd * theta
        if spec.proj is not None:
            drift = drift @ spec.proj
        noise = xi[spec.noise_row]
        if spec.noise_proj is not None:
            noise = noise @ spec.noise_proj
        return theta - spec.lr * drift + spec.sigma * noise

    def output(self, theta, x, spec: UpdateSpec):
        """Φ_N of each run's model, (R, S, dy)."""
        return self.forward(theta, x, spec)[0]

    def advance(self, theta, x, targets, xi, spec: UpdateSpec, tally: Tally):
        """One step: outputs, loss and cotangent against ``targets``, update; the loss goes
        to ``tally``.  Returns the new particles."""
        out, ctx = self.forward(theta, x, spec)
        loss, cot = cotangent(out, targets, spec)
        tally.add(loss)
        return self.update(ctx, cot, theta, xi, spec)

    def advance_many(self, theta, x, targets, xi, spec: UpdateSpec, tally: Tally, step0: int,
                     gate=None):
        """K steps: ``x (K, R, S, dx)``, ``targets (K, R, S, dy)``, ``xi (n_seeds, K, N, D)``;
        step k is :meth:`advance` at global step ``step0 + k``.  Returns the new particles.
        ``gate`` is for kernels with ``late_join`` (here it must be None)."""
        if gate is not None:
            raise ValueError(f"backend {self.name} takes no gate")
        for k in range(x.shape[0]):
            tally.step = step0 + k
            theta = self.advance(theta, x[k], targets[k], xi[:, k], spec, tally)
        return theta


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


class NativeStepwiseKernel(NativeV1Kernel):
    """Backend ``native`` for the models the step kernel does not cover (the mlp unit):
    one whole step per call of ``mfsym_fused``."""

    name = "native"


class DeepNativeKernel(NativeStepwiseKernel):
    """The fused C steps of the mean-ODE ResNet (``mfsym_deep_steps``, see
    :mod:`mfsym.engine.native`): θ (R, L·M, D) layer-major, x and targets (R, S, d).

    :meth:`advance_many` is :class:`NativeKernel`'s (one call for K steps, each: forward
    through the L layers, the scheme's cotangent, the back-propagated δ_l, each layer's
    force and update) and :meth:`output` the C forward of the (projected) model; the
    per-particle pull-back (``output_and_pullback``, ``forward``/``force``/``update``) is
    the eager reference.
    """

    advance = NativeKernel.advance
    advance_many = NativeKernel.advance_many
    late_join = False  # mfsym_deep_steps has no gate

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
    """The native kernel of ``model``: the ResNet's, the mlp unit's (whole steps of
    ``mfsym_fused``) or the step kernel of the matrix and uv units (``first``: their first
    kernel, backend ``native-v1``)."""
    if isinstance(model, ResNet):
        return DeepNativeKernel(model, dtype)
    if first:
        return NativeV1Kernel(model, dtype)
    if model.name not in STEP_KERNEL_UNITS:
        return NativeStepwiseKernel(model, dtype)
    return NativeKernel(model, dtype)


# ---------------------------------------------------------------------------------------
# compile: the fused formulas through torch.compile
# ---------------------------------------------------------------------------------------
def fused_output(unit: Unit, tht: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Φ_N from feature-major particles ``tht (R, D, N)`` and ``x (R, S, dx)``: (R, S, dy).

    Written element-wise over (R, S, N) so a compiler fuses it into one reduction.
    """
    act, dx, n = unit.activation.fn, unit.dx, tht.shape[-1]
    xl = [x[:, :, l, None] for l in range(dx)]
    if unit.name == "matrix":
        outs = [
            act(_dot([tht[:, None, k * dx + l, :] for l in range(dx)], xl)).sum(-1) / n
            for k in range(unit.dy)
        ]
    else:
        a = act(_dot([tht[:, None, l, :] for l in range(dx)], xl) / dx)
        outs = [(tht[:, None, dx + k, :] * a).sum(-1) / n for k in range(unit.dy)]
    return torch.stack(outs, -1)


def _dot(us, vs):
    acc = us[0] * vs[0]
    for u, v in zip(us[1:], vs[1:], strict=True):
        acc = acc + u * v
    return acc


def fused_force(unit: Unit, tht: torch.Tensor, x: torch.Tensor, cot: torch.Tensor):
    """Pull-back ``Σ_s J_n(x_s)ᵀ c_s`` in feature-major form ``(R, D, N)``.

    Samples are unrolled (S ≤ UNROLL_MAX_SAMPLES) so every term is a (R, N) element-wise
    expression and the compiled kernel keeps one pass over the particles.
    """
    S = x.shape[1]
    if S > UNROLL_MAX_SAMPLES:
        terms = _force_terms(unit, tht[:, None], x[:, :, :, None], cot[:, :, :, None], 1)
        return torch.stack(terms, 1)
    g = None
    for s in range(S):
        terms = _force_terms(unit, tht, x[:, s, :, None], cot[:, s, :, None], None)
        g = terms if g is None else [a + b for a, b in zip(g, terms, strict=True)]
    if unit.name == "uv":
        g = [t / unit.dx if i < unit.dx else t for i, t in enumerate(g)]
    return torch.stack(g, 1)


def _force_terms(unit, tht, xs, cs, sum_dim):
    """Per-feature force contributions; summed over ``sum_dim`` if given."""
    act, dact, dx, dy = unit.activation.fn, unit.activation.grad, unit.dx, unit.dy

    def red(t):
        return t if sum_dim is None else t.sum(sum_dim)

    def th(i):
        return tht[..., i, :]

    def xv(l):
        return xs[..., l, :]

    def cv(k):
        return cs[..., k, :]

    if unit.name == "matrix":
        g = [None] * (dx * dy)
        for k in range(dy):
            pre = _dot([th(k * dx + l) for l in range(dx)], [xv(l) for l in range(dx)])
            a = act(pre)
            w = dact(pre, a) * cv(k)
            for l in range(dx):
                g[k * dx + l] = red(w * xv(l))
        return g
    h = _dot([th(l) for l in range(dx)], [xv(l) for l in range(dx)]) / dx
    a = act(h)
    vc = _dot([th(dx + k) for k in range(dy)], [cv(k) for k in range(dy)])
    w = dact(h, a) * vc
    g_u = [red(w * xv(l)) for l in range(dx)]
    if sum_dim is not None:
        g_u = [t / dx for t in g_u]
    return g_u + [red(a * cv(k)) for k in range(dy)]


def _project_rows(v, P):
    """Row vectors times P: ``(v P)_d = Σ_e v_e P[e, d]`` for v (R, N, D), P (R, D, D)."""
    D = v.shape[-1]
    return _dot([v[..., e, None] for e in range(D)], [P[:, None, e, :] for e in range(D)])


class CompiledKernel(EagerKernel):
    """``fused_output`` / ``fused_force`` and the update compiled by ``torch.compile``."""

    name = "compile"

    def __init__(self, unit: Unit):
        super().__init__(unit)
        opts = {"dynamic": False, "fullgraph": True}
        self._out = torch.compile(self._output_fn, **opts)
        self._force = torch.compile(self._force_fn, **opts)
        self._step = torch.compile(self._step_fn, **opts)

    def _output_fn(self, tht, x):
        return fused_output(self.unit, tht, x)

    def _force_fn(self, tht, x, cot):
        return fused_force(self.unit, tht, x, cot).transpose(1, 2)

    def _step_fn(self, tht, x, cot, theta, xi, proj, nproj, lr, wd, sigma):
        drift = fused_force(self.unit, tht, x, cot).transpose(1, 2) + wd * theta
        if proj is not None:
            drift = _project_rows(drift, proj)
        if nproj is not None:
            xi = _project_rows(xi, nproj)
        return theta - lr * drift + sigma * xi

    @staticmethod
    def _flat(theta, x):
        lead = theta.shape[:-2]
        th = theta.reshape(-1, *theta.shape[-2:])
        xs = x.expand(*lead, *x.shape[-2:]).reshape(-1, *x.shape[-2:]).contiguous()
        return lead, th, xs

    def output_and_pullback(self, theta, x):
        lead, th, xs = self._flat(theta, x)
        tht = th.transpose(1, 2).contiguous()
        out = self._out(tht, xs)

        def pullback(cot):
            c = cot.expand(*lead, *cot.shape[-2:]).reshape(th.shape[0], -1, cot.shape[-1])
            return self._force(tht, xs, c.contiguous()).reshape(*lead, *th.shape[-2:])

        return out.reshape(*lead, *out.shape[-2:]), pullback

    def forward(self, theta, x, spec: UpdateSpec):
        tht = spec.model_particles(theta).transpose(1, 2).contiguous()
        x = x.contiguous()
        return self._out(tht, x), (tht, x)

    def force(self, ctx, cot):
        tht, x = ctx
        return self._force(tht, x, cot.contiguous())

    def update(self, ctx, cot, theta, xi, spec: UpdateSpec):
        tht, x = ctx
        return self._step(
            tht, x, cot.contiguous(), theta, xi[spec.noise_row], spec.proj, spec.noise_proj,
            spec.lr, spec.wd, spec.sigma,
        )


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
