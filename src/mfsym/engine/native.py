"""Fused CPU kernels in C for the per-step force and update (backend ``native``).

The C sources are files shipped with the package: ``csrc/mfsym_kernel.c`` (the one-layer
ensembles of the matrix, uv and mlp units; the mlp unit's part in ``csrc/mfsym_mlp.h``),
``csrc/mfsym_deep.c`` (the mean-ODE ResNet of a matrix or mlp unit; it includes the first
for its layer unit) and ``csrc/mfsym_normal.c`` (normal numbers with ``torch.randn``'s bits
from a CPU generator's state, for :mod:`mfsym.engine.fast_normal`; one build for all).
For one model, activation, size and dtype a kernel source is built with ``-D`` macros
that fix every size (and the ResNet's depth) at compile time (see
:func:`build_macros`, :class:`Build`), by the system C compiler (OpenMP,
``-O3 -march=native``), into a cached shared library called through :mod:`ctypes`.

What the kernels compute (shapes as in :mod:`mfsym.core.units`; R runs, N particles, S samples):

* ``output``: ``Φ_N(x_s) = (1/N) Σ_n σ*(x_s, P θ_n)``, ``(R, S, dy)``, with P the run's
  model projector (P_E for EA, else the identity);
* ``force``: the pull-back ``F_n = Σ_s J_n(x_s)ᵀ c_s``, ``(R, N, D)``;
* ``step``: the whole noisy SGD update of PAPER.md §4 in one pass,
  ``θ ← θ − lr · Π_d[F(Pθ) + wd θ] + σ · Π_n ξ``, never storing F;
* ``steps`` (the step kernel, backend ``native``): K whole training steps in one call —
  outputs, the scheme's cotangent ``c₀(L o − T)`` and loss, the pull-back and the update —
  for views ``x (K, R, S, dx)``, targets ``(K, R, S, dy)`` and noise ``ξ (n_seeds, K, N,
  D)``, so a single run pays no per-step Python;
* ``fused``: one whole step per call (the first kernel, backend ``native-v1``, kept to be
  timed beside the step kernel).
* for the ResNet (:class:`DeepLibrary`, N = L·M particles layer-major, X = Y = R^d):
  ``output`` ``Φ(x_s) = h_L`` (R, S, d) with ``h_l = h_{l−1} + (1/(L·M)) Σᵢ σ*(h_{l−1}, z_{l,i})``
  and ``fused``: the forward keeping each h_l and the activation data, the cotangent
  ``δ_L = c``, then from the top layer down the force
  ``F_{l,i} = Σ_s J_z σ*(h_{l−1,s}, z_{l,i})ᵀ δ_{l,s}`` with the update of layer l's
  particles, and ``δ_{l−1} = δ_l + (1/(L·M)) Σᵢ J_x σ*(h_{l−1}, z_{l,i})ᵀ δ_l``.

Speed comes from (i) one pass per phase over the particles, kept in cache-sized chunks
of ``CH`` particles stored feature-major; the step kernel holds ``VL`` particles of a
feature row in one GNU C vector (64 bytes with AVX-512), keeps the D force rows of a
vector of particles in registers over all samples, and vectorises the update and the
projections too, (ii) the activation and its derivative computed from one
pre-activation (one reciprocal per sigmoid), (iii) a branch-free, vectorisable
exponential (Cody–Waite reduction ``v = n ln2 + r``, |r| ≤ ln2/2, Taylor polynomial of
degree 7 / 13 in float32 / float64, scaling by 2ⁿ through the exponent bits; relative
error about one unit in the last place, NaN propagates).  ``mfsym_floor`` measures this
CPU's throughput for those operations (``benchmarks/engine_floor.py``).

Threads.  The step kernel and ``output``/``force``/``step`` run on their own POSIX
threads, as many as torch's intra-op count (which :func:`mfsym.records.threads.limit_threads`
sets from a job's ``threads``).  Work items — (run, chunk) pairs of a phase, or whole runs
when every thread gets as many — are claimed one at a time from a shared counter, so a
thread the system deschedules holds up only the item it has; the thread finishing a
phase's last item does the per-run serial part and opens the next phase; a thread with
nothing to claim spins about a tenth of a millisecond, then sleeps on a condition
variable.  No thread spins for long, so a busy machine costs this run its fair share and
no more.  (``native-v1`` uses OpenMP, whose waiting policy is the runtime's.)

Determinism.  Work is split into (run, chunk) items whose boundaries depend only on N;
partial sums over particles are kept per chunk (in float64) and added in chunk order, so
the result is the same bit for bit whatever the number of threads, whichever thread did
which item, and whatever other runs share the call.
Building.  :mod:`mfsym.engine.native_build` compiles, caches and verifies the libraries
(a cached library is loaded only after its hash, record and exported variant check out).
The C calls go through :class:`NativeLibrary` (and :class:`DeepLibrary`), which check every
tensor before passing its pointer.
"""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import torch

from ..core.units import Unit
from .native_build import (  # noqa: F401 - the build machinery's public names, re-exported
    ABI,
    ACT_CODE,
    DEEP_ABI,
    DEEP_SOURCE,
    DEEP_UNITS,
    DTYPE_CODE,
    FLAGS,
    MLP_SOURCE,
    NORMAL_ABI,
    NORMAL_SOURCE,
    SOURCE,
    UNIT_CODE,
    Build,
    NativeUnavailable,
    _loaded,
    build_macros,
    cache_key,
    compiler_version,
    deep_build,
    expected_variant,
    find_compiler,
    leaky_slope,
    library_variant,
    machine_id,
    normal_build,
    obtain,
    obtain_library,
    shallow_build,
    trust_problem,
)


def load_library(unit: Unit, dtype: torch.dtype) -> NativeLibrary:
    """The compiled kernels for ``unit`` and ``dtype`` (obtained once per process)."""
    return NativeLibrary(_loaded(shallow_build(unit, dtype), _declare), unit, dtype)


def load_deep_library(model, dtype: torch.dtype) -> DeepLibrary:
    """The compiled kernels of the mean-ODE ResNet ``model`` in ``dtype`` (once per process)."""
    return DeepLibrary(_loaded(deep_build(model, dtype), _declare_deep), model, dtype)


def load_normal_library() -> ctypes.CDLL:
    """The compiled normal-number generator (obtained once per process), its
    ``mfsym_normal_f32`` and ``mfsym_normal_f64`` declared."""
    return _loaded(normal_build(), _declare_normal)


def _declare_normal(lib: ctypes.CDLL) -> None:
    ptr = ctypes.c_void_p
    for fn in (lib.mfsym_normal_f32, lib.mfsym_normal_f64):
        fn.argtypes = [ptr, ptr, ptr, ptr, ctypes.c_int64, ctypes.c_int]
        fn.restype = ctypes.c_int


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, i32, f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    lib.mfsym_output.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i32]
    lib.mfsym_force.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, i32]
    lib.mfsym_step.argtypes = [
        i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr, ptr, ptr, ptr, f64, f64, f64, ptr, i32,
    ]
    lib.mfsym_fused.argtypes = [
        i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, f64, ptr, ptr, i64, ptr, ptr, ptr, ptr,
        f64, f64, f64, ptr, ptr, ptr, ptr, i64, ptr, ptr, i32,
    ]
    lib.mfsym_sizes.argtypes = [i64, i64, ptr, ptr]
    lib.mfsym_sizes.restype = None
    lib.mfsym_floor.argtypes = [i64, i32, ptr]
    lib.mfsym_floor.restype = None
    for fn in (lib.mfsym_output, lib.mfsym_force, lib.mfsym_step, lib.mfsym_fused):
        fn.restype = i32
    _declare_steps(lib.mfsym_steps, lib.mfsym_steps_sizes, lib.mfsym_steps_gated)
    lib.mfsym_gate_open.argtypes = [ptr]
    lib.mfsym_gate_open.restype = None


def _declare_steps(fn, sizes, gated) -> None:
    """The arguments of ``mfsym_steps``, ``mfsym_steps_sizes`` and ``mfsym_steps_gated``
    (and of the ResNet's ``mfsym_deep_steps``, ``mfsym_deep_steps_sizes``,
    ``mfsym_deep_steps_gated``)."""
    i64, ptr, i32, f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    fn.argtypes = [
        i64, i64, i64, i64, i64, ptr, ptr, i64, ptr, i64, ptr, ptr, f64, ptr, ptr, i64,
        i64, ptr, ptr, ptr, ptr, f64, f64, f64, ptr, ptr, ptr, ptr, i64, ptr, ptr, i32,
    ]
    fn.restype = i32
    sizes.argtypes = [i64, i64, i64, i32, ptr, ptr]
    sizes.restype = None
    gated.argtypes = [*fn.argtypes, ptr, i32]  # the gate and the first thread id it holds
    gated.restype = i32


def _declare_deep(lib: ctypes.CDLL) -> None:
    """The ResNet's ``mfsym_deep_{output,fused,sizes}`` take the arguments of the one-layer
    ``mfsym_{output,fused,sizes}`` (which the library also holds), ``mfsym_deep_steps``
    those of ``mfsym_steps``."""
    _declare(lib)
    for name in ("output", "fused", "sizes"):
        one, deep = getattr(lib, f"mfsym_{name}"), getattr(lib, f"mfsym_deep_{name}")
        deep.argtypes, deep.restype = one.argtypes, one.restype
    _declare_steps(lib.mfsym_deep_steps, lib.mfsym_deep_steps_sizes,
                   lib.mfsym_deep_steps_gated)


# ---------------------------------------------------------------------------------------
# the checked boundary: every tensor is validated before its pointer reaches C
# ---------------------------------------------------------------------------------------
I8, I64, F64 = torch.int8, torch.int64, torch.float64


def check_tensor(name: str, t, dtype: torch.dtype, dims, inner_contiguous: int | None = None):
    """Raise unless ``t`` is a CPU tensor of ``dtype`` and shape ``dims`` (pairs of symbol
    and size), contiguous (or, with ``inner_contiguous=k``, contiguous in its last k axes).

    The common case (a contiguous CPU tensor of the right dtype and shape) is decided in a
    few attribute reads: the checks run on every kernel call, several per training step."""
    if (inner_contiguous is None and type(t) is torch.Tensor and t.dtype == dtype
            and t.is_contiguous() and t.device.type == "cpu"
            and t.shape == tuple(int(n) for _, n in dims)):
        return
    symbols = "(" + ", ".join(s for s, _ in dims) + ")"
    sizes = tuple(int(n) for _, n in dims)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {symbols}, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}; expected {dtype} {symbols}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; the native kernels need CPU tensors")
    if tuple(t.shape) != sizes:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; expected {symbols} = {sizes}"
        )
    k = t.dim() if inner_contiguous is None else inner_contiguous
    if not _row_major(t.shape[t.dim() - k :], t.stride()[t.dim() - k :]):
        part = "" if k == t.dim() else f" in its last {k} axes"
        raise ValueError(
            f"{name} is not contiguous{part} (strides {t.stride()}, shape {tuple(t.shape)}); "
            "pass a contiguous tensor (.contiguous())"
        )


def _row_major(shape, stride) -> bool:
    """Whether these axes are laid out densely in C order (axes of size 1 may have any
    stride, as in ``Tensor.is_contiguous``)."""
    expect = 1
    for n, st in zip(reversed(shape), reversed(stride), strict=True):
        if n != 1 and st != expect:
            return False
        expect *= n
    return True


def shape_of(t) -> str:
    """A tensor's shape for an error message (or the type of what is not a tensor)."""
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _positive(name: str, value: int, what: str) -> None:
    if value < 1:
        raise ValueError(f"{name} must be at least 1 ({what}), got {value}")


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class Gate:
    """A flag at which team threads of the step kernel wait before they take work
    (``mfsym_steps_gated``): :meth:`close` it before a call while another thread of the
    caller is still busy, and :meth:`open` it from that thread when it is done.  Opening
    wakes the waiting threads; a call whose work is all handed out first releases them."""

    def __init__(self, lib, first: int):
        self.lib, self.first = lib, int(first)
        self.flag = (ctypes.c_int32 * 2)(1, 0)  # open, threads that joined at it

    @property
    def joined(self) -> int:
        """Threads that have joined a call at this gate so far."""
        return int(self.flag[1])

    def close(self) -> None:
        self.flag[0] = 0

    def open(self) -> None:
        self.lib.mfsym_gate_open(ctypes.addressof(self.flag))


class NativeLibrary:
    """The compiled kernels of one unit and dtype behind checked methods.

    Shapes: R runs, N particles, S samples, D = unit.dim_z, dx, dy; every tensor must be
    on the CPU, in ``dtype`` (flags int8, noise rows int64, loss float64) and contiguous.
    """

    def __init__(self, lib: ctypes.CDLL, unit: Unit, dtype: torch.dtype):
        self.lib, self.unit, self.dtype = lib, unit, dtype
        self.D, self.dx, self.dy = unit.dim_z, unit.dx, unit.dy

    def _sizes(self, theta, x):
        """R, N, S from particles ``theta (R, N, D)`` and inputs ``x (R, S, dx)``."""
        if not isinstance(theta, torch.Tensor) or theta.dim() != 3:
            shape = shape_of(theta)
            raise ValueError(f"theta must be (R, N, D) with D = {self.D}, got {shape}")
        R, N, _ = theta.shape
        check_tensor("theta", theta, self.dtype, (("R", R), ("N", N), ("D", self.D)))
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = shape_of(x)
            raise ValueError(f"x must be (R, S, dx) with R = {R}, dx = {self.dx}, got {shape}")
        S = x.shape[1]
        check_tensor("x", x, self.dtype, (("R", R), ("S", S), ("dx", self.dx)))
        _positive("N", N, "particles per run")
        _positive("S", S, "samples per step")
        return R, N, S

    def _projectors(self, R, **mats):
        for name, t in mats.items():
            if name.endswith("_on"):
                check_tensor(name, t, I8, (("R", R),))
            else:
                check_tensor(name, t, self.dtype, (("R", R), ("D", self.D), ("D", self.D)))

    def _noise(self, R, N, xi, xi_row):
        """``xi (n_seeds, N, D)`` contiguous per seed, ``xi_row (R,)`` rows in range."""
        if not isinstance(xi, torch.Tensor) or xi.dim() != 3:
            shape = shape_of(xi)
            raise ValueError(f"xi must be (n_seeds, N, D) = (·, {N}, {self.D}), got {shape}")
        dims = (("n_seeds", xi.shape[0]), ("N", N), ("D", self.D))
        check_tensor("xi", xi, self.dtype, dims, inner_contiguous=2)
        check_tensor("xi_row", xi_row, I64, (("R", R),))
        if R and (int(xi_row.min()) < 0 or int(xi_row.max()) >= xi.shape[0]):
            raise ValueError(
                f"xi_row holds rows {xi_row.tolist()}; allowed: 0 to {xi.shape[0] - 1} "
                "(the rows of xi)"
            )

    def output(self, theta, x, proj, proj_on, threads: int) -> torch.Tensor:
        """Φ_N of the (projected) particles, (R, S, dy)."""
        R, N, S = self._sizes(theta, x)
        self._projectors(R, proj=proj, proj_on=proj_on)
        _positive("threads", threads, "OpenMP threads")
        out = torch.empty(R, S, self.dy, dtype=self.dtype)
        rc = self.lib.mfsym_output(
            R, N, S, _ptr(theta), _ptr(x), _ptr(proj), _ptr(proj_on), _ptr(out), threads
        )
        if rc:
            raise MemoryError("native output kernel could not allocate its buffer")
        return out

    def force(self, theta, x, cot, threads: int) -> torch.Tensor:
        """The pull-back Σ_s J_n(x_s)ᵀ c_s, (R, N, D), for ``cot (R, S, dy)``."""
        R, N, S = self._sizes(theta, x)
        check_tensor("cot", cot, self.dtype, (("R", R), ("S", S), ("dy", self.dy)))
        _positive("threads", threads, "OpenMP threads")
        force = torch.empty(R, N, self.D, dtype=self.dtype)
        self.lib.mfsym_force(R, N, S, _ptr(theta), _ptr(x), _ptr(cot), _ptr(force), threads)
        return force

    def step(self, theta, x, cot, xi, xi_row, proj, proj_on, noise_proj, noise_on,
             lr: float, wd: float, sigma: float, threads: int) -> torch.Tensor:
        """θ − lr·Π_d[F(Pθ) + wd·θ] + σ·Π_n ξ for a given cotangent, (R, N, D)."""
        R, N, S = self._sizes(theta, x)
        check_tensor("cot", cot, self.dtype, (("R", R), ("S", S), ("dy", self.dy)))
        self._noise(R, N, xi, xi_row)
        self._projectors(R, proj=proj, proj_on=proj_on, noise_proj=noise_proj,
                         noise_on=noise_on)
        _positive("threads", threads, "OpenMP threads")
        new = torch.empty(R, N, self.D, dtype=self.dtype)
        self.lib.mfsym_step(
            R, N, S, _ptr(theta), _ptr(x), _ptr(cot), _ptr(xi), _ptr(xi_row), xi.stride(0),
            _ptr(proj), _ptr(proj_on), _ptr(noise_proj), _ptr(noise_on), float(lr),
            float(wd), float(sigma), _ptr(new), threads,
        )
        return new

    def workspace_sizes(self, N: int, S: int) -> tuple[int, int]:
        """Reals and doubles of scratch one worker of :meth:`fused` needs."""
        _positive("N", N, "particles per run")
        _positive("S", S, "samples per step")
        reals, doubles = ctypes.c_int64(), ctypes.c_int64()
        self.lib.mfsym_sizes(N, S, ctypes.byref(reals), ctypes.byref(doubles))
        return reals.value, doubles.value

    def fused(self, theta, x, targets, views: int, cot_l, cot_on, c0: float, xi, xi_row,
              proj, proj_on, noise_proj, noise_on, lr: float, wd: float, sigma: float,
              loss_acc, first_bad, step: int, work, partw, threads: int):
        """A whole step (see ``mfsym_fused``): returns ``(out (R, S, dy), new θ)`` and adds
        each run's loss to ``loss_acc (R,)`` float64, marking ``first_bad (R,)`` int64."""
        R, N, S = self._sizes(theta, x)
        _positive("views", views, "views per sample")
        if S % views:
            raise ValueError(f"S = {S} samples is not a multiple of views = {views}")
        check_tensor("targets", targets, self.dtype, (("R", R), ("S", S), ("dy", self.dy)))
        md = views * self.dy
        check_tensor("cot_l", cot_l, self.dtype, (("R", R), ("m·dy", md), ("m·dy", md)))
        check_tensor("cot_on", cot_on, I8, (("R", R),))
        self._noise(R, N, xi, xi_row)
        self._projectors(R, proj=proj, proj_on=proj_on, noise_proj=noise_proj,
                         noise_on=noise_on)
        check_tensor("loss_acc", loss_acc, F64, (("R", R),))
        check_tensor("first_bad", first_bad, I64, (("R", R),))
        _positive("threads", threads, "OpenMP threads")
        reals, doubles = self.workspace_sizes(N, S)
        check_tensor("work", work, self.dtype, (("size", work.numel()),))
        check_tensor("partw", partw, F64, (("size", partw.numel()),))
        if work.numel() < threads * reals or partw.numel() < threads * doubles:
            raise ValueError(
                f"work/partw hold {work.numel()}/{partw.numel()} numbers; {threads} threads "
                f"need {threads * reals}/{threads * doubles}"
            )
        out = torch.empty(R, S, self.dy, dtype=self.dtype)
        new = torch.empty(R, N, self.D, dtype=self.dtype)
        self.lib.mfsym_fused(
            R, N, S, views, _ptr(theta), _ptr(x), _ptr(targets), _ptr(cot_l), _ptr(cot_on),
            float(c0), _ptr(xi), _ptr(xi_row), xi.stride(0), _ptr(proj), _ptr(proj_on),
            _ptr(noise_proj), _ptr(noise_on), float(lr), float(wd), float(sigma), _ptr(out),
            _ptr(new), _ptr(loss_acc), _ptr(first_bad), int(step), _ptr(work), _ptr(partw),
            threads,
        )
        return out, new

    def steps_workspace(self, R: int, N: int, S: int, threads: int) -> tuple[int, int]:
        """Reals and doubles of scratch :meth:`steps` needs for ``threads`` threads."""
        _positive("R", R, "runs")
        _positive("N", N, "particles per run")
        _positive("S", S, "samples per step")
        _positive("threads", threads, "threads")
        reals, doubles = ctypes.c_int64(), ctypes.c_int64()
        self.lib.mfsym_steps_sizes(R, N, S, threads, ctypes.byref(reals), ctypes.byref(doubles))
        return reals.value, doubles.value

    def steps(self, theta, x, targets, views: int, cot_l, cot_on, c0: float, xi, xi_row,
              proj, proj_on, noise_proj, noise_on, lr: float, wd: float, sigma: float,
              loss_acc, first_bad, step0: int, work, partw, threads: int,
              gate: Gate | None = None) -> torch.Tensor:
        """K whole steps in one call (``mfsym_steps``): ``x (K, R, S, dx)`` and
        ``targets (K, R, S, dy)`` per step, ``xi (n_seeds, K, N, D)`` with each (seed,
        step) block of N·D numbers contiguous; returns θ after the K steps, (R, N, D).
        Each step's loss is added to ``loss_acc (R,)``; ``first_bad (R,)`` gets the step
        ``step0 + k`` of a run's first non-finite loss.  With a ``gate`` (:meth:`gate`)
        the threads from its ``first`` on join once it opens (``mfsym_steps_gated``)."""
        if not isinstance(theta, torch.Tensor) or theta.dim() != 3:
            raise ValueError(f"theta must be (R, N, D) with D = {self.D}, got {shape_of(theta)}")
        R, N, _ = theta.shape
        check_tensor("theta", theta, self.dtype, (("R", R), ("N", N), ("D", self.D)))
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"x must be (K, R, S, dx) with R = {R}, got {shape_of(x)}")
        K, S = x.shape[0], x.shape[2]
        _positive("K", K, "steps")
        _positive("N", N, "particles per run")
        _positive("S", S, "samples per step")
        _positive("views", views, "views per sample")
        if S % views:
            raise ValueError(f"S = {S} samples is not a multiple of views = {views}")
        check_tensor("x", x, self.dtype, (("K", K), ("R", R), ("S", S), ("dx", self.dx)))
        check_tensor("targets", targets, self.dtype,
                     (("K", K), ("R", R), ("S", S), ("dy", self.dy)))
        md = views * self.dy
        check_tensor("cot_l", cot_l, self.dtype, (("R", R), ("m·dy", md), ("m·dy", md)))
        check_tensor("cot_on", cot_on, I8, (("R", R),))
        if not isinstance(xi, torch.Tensor) or xi.dim() != 4:
            raise ValueError(f"xi must be (n_seeds, K, N, D) = (·, {K}, {N}, {self.D}), "
                             f"got {shape_of(xi)}")
        dims = (("n_seeds", xi.shape[0]), ("K", K), ("N", N), ("D", self.D))
        check_tensor("xi", xi, self.dtype, dims, inner_contiguous=2)
        check_tensor("xi_row", xi_row, I64, (("R", R),))
        if int(xi_row.min()) < 0 or int(xi_row.max()) >= xi.shape[0]:
            raise ValueError(f"xi_row holds rows {xi_row.tolist()}; allowed: 0 to "
                             f"{xi.shape[0] - 1} (the rows of xi)")
        self._projectors(R, proj=proj, proj_on=proj_on, noise_proj=noise_proj,
                         noise_on=noise_on)
        check_tensor("loss_acc", loss_acc, F64, (("R", R),))
        check_tensor("first_bad", first_bad, I64, (("R", R),))
        reals, doubles = self.steps_workspace(R, N, S, threads)
        check_tensor("work", work, self.dtype, (("size", work.numel()),))
        check_tensor("partw", partw, F64, (("size", partw.numel()),))
        if work.numel() < reals or partw.numel() < doubles:
            raise ValueError(f"work/partw hold {work.numel()}/{partw.numel()} numbers; "
                             f"{threads} threads need {reals}/{doubles}")
        if gate is not None and gate.lib is not self.lib:
            raise ValueError("the gate belongs to another library (use this one's gate())")
        new = torch.empty(R, N, self.D, dtype=self.dtype)
        tmp = torch.empty(R, N, self.D, dtype=self.dtype) if K > 1 else new
        args = (
            R, N, S, views, K, _ptr(theta), _ptr(x), x.stride(0), _ptr(targets),
            targets.stride(0), _ptr(cot_l), _ptr(cot_on), float(c0), _ptr(xi), _ptr(xi_row),
            xi.stride(0), xi.stride(1), _ptr(proj), _ptr(proj_on), _ptr(noise_proj),
            _ptr(noise_on), float(lr), float(wd), float(sigma), _ptr(new), _ptr(tmp),
            _ptr(loss_acc), _ptr(first_bad), int(step0), _ptr(work), _ptr(partw), threads,
        )
        if gate is None:
            rc = self.lib.mfsym_steps(*args)
        else:
            rc = self.lib.mfsym_steps_gated(*args, ctypes.addressof(gate.flag), gate.first)
        if rc < 0:
            raise MemoryError(f"mfsym_steps could not allocate the claim flags of its work "
                              f"items ({R} runs, N = {N})")
        return new

    def gate(self, first: int) -> Gate:
        """A gate for :meth:`steps`, open; the team threads with ids ≥ ``first`` (≥ 1: the
        caller's own thread, id 0, never waits) wait at it while it is closed."""
        _positive("first", first, "the first thread id that waits")
        return Gate(self.lib, first)

    def floor(self, reps: int = 2000, threads: int = 1) -> dict[str, float]:
        """This CPU's throughput for the step kernel's operations, ns per lane in each
        thread's CPU time with ``threads`` threads measuring at once (see
        ``mfsym_floor``): ``fma``, ``exp`` and ``reciprocal``."""
        _positive("reps", reps, "passes")
        _positive("threads", threads, "threads")
        out = (ctypes.c_double * 3)()
        self.lib.mfsym_floor(int(reps), int(threads), ctypes.addressof(out))
        return dict(zip(("fma", "exp", "reciprocal"), out, strict=True))

class DeepLibrary(NativeLibrary):
    """The compiled kernels of a mean-ODE ResNet (``models.ResNet``) behind the checked
    methods of :class:`NativeLibrary`: :meth:`output` (Φ(x) = h_L, (R, S, d)),
    :meth:`workspace_sizes` and :meth:`fused` (a whole step, ``mfsym_deep_fused``),
    :meth:`steps_workspace` and :meth:`steps` (K whole steps, ``mfsym_deep_steps``, or
    ``mfsym_deep_steps_gated`` with a :meth:`gate`), with
    particles ``theta (R, N, D)``, N = L·M layer-major.  The per-particle pull-back of a
    one-layer model (``force``, ``step``) has no meaning here."""

    def __init__(self, lib: ctypes.CDLL, model, dtype: torch.dtype):
        symbols = SimpleNamespace(
            mfsym_output=lib.mfsym_deep_output, mfsym_fused=lib.mfsym_deep_fused,
            mfsym_sizes=lib.mfsym_deep_sizes, mfsym_steps=lib.mfsym_deep_steps,
            mfsym_steps_sizes=lib.mfsym_deep_steps_sizes,
            mfsym_steps_gated=lib.mfsym_deep_steps_gated, mfsym_gate_open=lib.mfsym_gate_open,
        )
        super().__init__(symbols, model, dtype)
        self.depth = model.depth

    def _sizes(self, theta, x):
        R, N, S = super()._sizes(theta, x)
        if N % self.depth:
            raise ValueError(
                f"theta holds N = {N} particles per run, not a multiple of the depth "
                f"L = {self.depth}"
            )
        return R, N, S

    def _layered(self, N: int) -> None:
        if N % self.depth:
            raise ValueError(f"N = {N} is not a multiple of the depth L = {self.depth}")

    def workspace_sizes(self, N: int, S: int) -> tuple[int, int]:
        self._layered(N)
        return super().workspace_sizes(N, S)

    def steps_workspace(self, R: int, N: int, S: int, threads: int) -> tuple[int, int]:
        self._layered(N)
        return super().steps_workspace(R, N, S, threads)

    def force(self, *args, **kwargs):
        raise NotImplementedError("a ResNet has no per-particle native pull-back")

    step = force
