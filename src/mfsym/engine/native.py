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

Cache.  A library is stored as ``mfsym_<key>.so`` (key: :func:`cache_key`, over every C
file the build reads) with a JSON record of its SHA-256 and variant; it is loaded only when
the folder, the library and the record are this user's alone (:func:`trust_problem`: no
link, owned by the user or root, writable by no one else), both match and its exported
``mfsym_variant`` (``mfsym_deep_variant`` for the ResNet) agrees once loaded, else rebuilt
(:func:`obtain`).  A cache folder that fails the trust check is not used at all (warning;
the private default folder instead).  The C calls go through :class:`NativeLibrary` (and
:class:`DeepLibrary`), which check every tensor before passing its pointer.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from ..core.units import Unit
from ..records.atomic import atomic_path

log = logging.getLogger(__name__)

#: The C file of the kernels (package data).
SOURCE = Path(__file__).with_name("csrc") / "mfsym_kernel.c"
#: The mlp unit's part of ``SOURCE`` (included by it when ``MFSYM_UNIT`` is 3).
MLP_SOURCE = SOURCE.with_name("mfsym_mlp.h")
#: The C file of the ResNet kernels (it includes ``SOURCE`` for its layer unit).
DEEP_SOURCE = SOURCE.with_name("mfsym_deep.c")
#: The C file of the normal-number generator (see :mod:`mfsym.engine.fast_normal`).
NORMAL_SOURCE = SOURCE.with_name("mfsym_normal.c")

#: Build-time codes of the units and activations (``MFSYM_UNIT``, ``MFSYM_ACT``).
UNIT_CODE = {"matrix": 1, "uv": 2, "mlp": 3}
#: The layer units of the ResNet kernels.
DEEP_UNITS = ("matrix", "mlp")
ACT_CODE = {"sigmoid": 1, "tanh": 2, "relu": 3, "leaky_relu": 4, "linear": 5}
DTYPE_CODE = {torch.float32: 0, torch.float64: 1}

#: GNU C (not ISO) so that a·b + c contracts to one fused multiply-add.
FLAGS = [
    "-O3", "-std=gnu11", "-ffp-contract=fast", "-fPIC", "-shared", "-fno-math-errno",
    "-fno-trapping-math", "-pthread",
]
_OPTIONAL_FLAGS = (["-march=native", "-fopenmp"], ["-fopenmp"], [])

#: Layout version of the exported C functions (``MFSYM_ABI`` in the C source).
ABI = 3
#: Layout version of the ResNet kernels (``MFSYM_DEEP_ABI`` in ``DEEP_SOURCE``).
DEEP_ABI = 1
#: Layout version of the normal-number generator (``MFSYM_NORMAL_ABI`` in ``NORMAL_SOURCE``).
NORMAL_ABI = 1

#: Seconds one compiler run may take before the build counts as failed.
COMPILE_TIMEOUT_S = 300.0

_LOCK = threading.Lock()
_LIBS: dict[tuple, ctypes.CDLL] = {}


class NativeUnavailable(RuntimeError):
    """The native backend cannot serve this unit, dtype or machine (reason in the message)."""


def leaky_slope(unit: Unit) -> float:
    """The negative-side slope of a leaky ReLU unit, read off act(−1) = −slope."""
    value = unit.activation.fn(torch.tensor(-1.0, dtype=torch.float64))
    return -float(value)


def build_macros(unit: Unit, dtype: torch.dtype) -> list[str]:
    """The ``-D`` flags selecting the kernels of ``unit`` in ``dtype`` (raises
    :class:`NativeUnavailable` naming the allowed values if there is no such kernel)."""
    if unit.name not in UNIT_CODE:
        raise NativeUnavailable(
            f"unit {unit.name!r} has no native kernel; allowed: {sorted(UNIT_CODE)}"
        )
    act = unit.activation.name
    if act not in ACT_CODE:
        raise NativeUnavailable(
            f"activation {act!r} has no native kernel; allowed: {sorted(ACT_CODE)}"
        )
    if dtype not in DTYPE_CODE:
        raise NativeUnavailable(f"dtype {dtype} is not supported (float32, float64)")
    slope = repr(leaky_slope(unit)) if act == "leaky_relu" else "0.0"
    values = {
        "DOUBLE": DTYPE_CODE[dtype], "UNIT": UNIT_CODE[unit.name], "ACT": ACT_CODE[act],
        "DX": unit.dx, "DY": unit.dy, "SLOPE": slope,
    }
    if unit.name == "mlp":
        values["HIDDEN"] = unit.hidden
    return [f"-DMFSYM_{k}={v}" for k, v in values.items()]


def find_compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH (None: none)."""
    cc = os.environ.get("CC")
    if cc:
        return cc
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _private_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mfsym" / "kernels"


def _cache_dir() -> Path:
    env = os.environ.get("MFSYM_KERNEL_CACHE")
    return Path(env) if env else _private_cache_dir()


def trust_problem(path: Path) -> str | None:
    """Why a cache folder or file may hold what someone else put there (None: it cannot).

    Loading a library runs its code (ELF constructors run before any check), so, as ssh
    treats its keys, only a path that is no symbolic link, is owned by this user (or root)
    and is writable by no one else (no group or other write bit) is trusted."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"it cannot be examined ({exc})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if st.st_uid not in (os.geteuid(), 0):
        return f"it is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


_CPU_FIELDS = (
    "model name", "flags", "Features", "CPU implementer", "CPU architecture", "CPU variant",
    "CPU part",
)


def machine_id() -> str:
    """What a library built with ``-march=native`` depends on: the OS, the architecture
    and, on Linux, the CPU model and feature flags (x86 and Arm fields of /proc/cpuinfo)."""
    parts = [platform.system(), platform.machine()]
    try:
        text = Path("/proc/cpuinfo").read_text()
        parts += sorted({ln.strip() for ln in text.splitlines() if ln.startswith(_CPU_FIELDS)})
    except OSError:
        parts.append(platform.processor())
    return "|".join(parts)


def compiler_version(cc: str) -> str:
    """The whole ``cc --version`` output (raises :class:`NativeUnavailable` if it fails)."""
    try:
        res = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeUnavailable(f"C compiler {cc!r} does not run ({exc})") from exc
    if res.returncode != 0:
        raise NativeUnavailable(f"C compiler {cc!r} --version failed: {res.stderr.strip()}")
    return res.stdout.strip()


def cache_key(version: str, flags: list[str], sources: tuple[Path, ...] = (SOURCE,)) -> str:
    """Name of a library in the cache: a hash of the C sources it is built from, the
    compiler's version output, every flag and macro (so a build without OpenMP has its own
    key) and :func:`machine_id`."""
    digests = [hashlib.sha256(src.read_bytes()).hexdigest() for src in sources]
    parts = [*digests, version, " ".join(flags)]
    return hashlib.sha256("\0".join([*parts, machine_id()]).encode()).hexdigest()[:32]


def expected_variant(unit: Unit, dtype: torch.dtype, openmp: bool) -> dict:
    """What ``mfsym_variant`` of the library for ``unit``, ``dtype`` must report."""
    act = unit.activation.name
    return {
        "abi": ABI, "real_bytes": 8 if dtype == torch.float64 else 4,
        "unit": UNIT_CODE[unit.name], "activation": ACT_CODE[act], "dx": unit.dx,
        "dy": unit.dy, "d": unit.dim_z, "openmp": int(openmp),
        "slope": leaky_slope(unit) if act == "leaky_relu" else 0.0,
    }


_VARIANT_FIELDS = ("abi", "real_bytes", "unit", "activation", "dx", "dy", "d", "chunk", "openmp")
#: What each variant function reports (the one-layer kernels add their vector length, the
#: ResNet's its depth and hidden width).
_FIELDS = {
    "mfsym_variant": (*_VARIANT_FIELDS, "lanes"),
    "mfsym_deep_variant": (*_VARIANT_FIELDS, "depth", "hidden"),
    "mfsym_normal_variant": ("abi", "vector_fma"),
}


def library_variant(lib: ctypes.CDLL, symbol: str = "mfsym_variant") -> dict:
    """The variant a loaded library was compiled for (its ``symbol``, ``mfsym_variant`` or
    ``mfsym_deep_variant``)."""
    fn = getattr(lib, symbol)  # AttributeError when the library has no such symbol
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_void_p], None
    fields = _FIELDS[symbol]
    vals = (ctypes.c_int64 * len(fields))()
    slope = ctypes.c_double()
    fn(ctypes.addressof(vals), ctypes.addressof(slope))
    return {**dict(zip(fields, vals, strict=True)), "slope": slope.value}


@dataclass(frozen=True)
class Build:
    """One library to obtain: the C file compiled (``source``), every file it reads
    (``sources``, hashed into the cache key), its ``-D`` macros, the variant its
    ``symbol`` must report with and without OpenMP (``want(openmp)``)."""

    source: Path
    sources: tuple[Path, ...]
    macros: tuple[str, ...]
    want: Callable[[bool], dict]
    symbol: str = "mfsym_variant"


def shallow_build(unit: Unit, dtype: torch.dtype) -> Build:
    """The one-layer kernels of ``unit`` (``SOURCE``, with ``MLP_SOURCE`` for the mlp unit)."""
    macros = tuple(build_macros(unit, dtype))
    sources = (SOURCE, MLP_SOURCE) if unit.name == "mlp" else (SOURCE,)
    return Build(SOURCE, sources, macros, lambda openmp: expected_variant(unit, dtype, openmp))


def deep_build(model, dtype: torch.dtype) -> Build:
    """The kernels of the mean-ODE ResNet ``model`` (depth L, a unit of
    :data:`DEEP_UNITS`): ``DEEP_SOURCE`` with the unit's macros and ``MFSYM_DEPTH=L``."""
    unit = model.unit
    if unit.name not in DEEP_UNITS:
        raise NativeUnavailable(
            f"the ResNet of the {unit.name} unit has no native kernel; allowed units: "
            f"{list(DEEP_UNITS)}"
        )
    base = shallow_build(unit, dtype)
    hidden = unit.hidden if unit.name == "mlp" else 0

    def want(openmp: bool) -> dict:
        return {**base.want(openmp), "abi": DEEP_ABI, "depth": model.depth, "hidden": hidden}

    return Build(DEEP_SOURCE, (DEEP_SOURCE, *base.sources),
                 (*base.macros, f"-DMFSYM_DEPTH={model.depth}"), want, "mfsym_deep_variant")


def normal_build() -> Build:
    """The normal-number generator (``NORMAL_SOURCE``).  It is compiled with
    ``-ffp-contract=off`` after the common flags: which products fuse into an addition
    decides its last bits, so the file spells out every fused multiply-add itself."""
    return Build(NORMAL_SOURCE, (NORMAL_SOURCE,), ("-ffp-contract=off",),
                 lambda openmp: {"abi": NORMAL_ABI}, "mfsym_normal_variant")


def _variant_problem(lib: ctypes.CDLL, want: dict, symbol: str = "mfsym_variant") -> str | None:
    try:
        got = library_variant(lib, symbol)
    except AttributeError:
        return f"it has no {symbol} symbol"
    got = {k: got[k] for k in want}
    return None if got == want else f"it was compiled for {got}, not {want}"


def _record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _cache_problem(path: Path, want: dict) -> str | None:
    """Why the cached library ``path`` must not be loaded (None: it and its record are this
    user's alone, and the record vouches for it)."""
    for file in (path, _record_path(path)):
        if file.exists() or file.is_symlink():
            problem = trust_problem(file)
            if problem is not None:
                return f"{file.name}: {problem}"
    try:
        record = json.loads(_record_path(path).read_text())
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError as exc:
        return f"{exc.filename} is missing"
    except (OSError, ValueError) as exc:
        return f"it cannot be read ({exc})"
    if not isinstance(record, dict) or record.get("sha256") != digest:
        return f"its SHA-256 {digest[:16]}… differs from the one its record holds"
    if record.get("variant") != want:
        return f"its record says it was built for {record.get('variant')}, not {want}"
    return None


class _BuildFailed(Exception):
    def __init__(self, message: str, final: bool = False):
        super().__init__(message)
        self.final = final  # no point trying the reduced builds (timeout, no compiler)


def _load_cached(path: Path, want: dict, symbol: str) -> ctypes.CDLL | None:
    """The cached library at ``path`` if its record, hash and symbol all check out; else
    None, with a warning naming the file and the cause."""
    problem = _cache_problem(path, want)
    if problem is None:
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            problem = f"it does not load ({exc})"
        else:
            problem = _variant_problem(lib, want, symbol)
            if problem is None:
                return lib
    log.warning("native kernel cache %s is not usable: %s; rebuilding it", path, problem)
    return None


def _store(path: Path, data: bytes, want: dict, flags: list[str], source: Path) -> None:
    """Put a fresh library and its record into the cache, each by an atomic rename."""
    record = {
        "library": path.name, "sha256": hashlib.sha256(data).hexdigest(), "variant": want,
        "flags": flags, "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
    }
    try:
        # the record holds the library's hash: no checksum sidecars
        with atomic_path(path, suffix=".so.tmp", checksum=False) as tmp:
            tmp.write_bytes(data)
        with atomic_path(_record_path(path), checksum=False) as tmp:
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        log.warning(
            "native kernel %s cannot be stored in the cache (%s); it serves this process only",
            path, exc,
        )


def _compile(cc: str, flags: list[str], out: Path, source: Path) -> None:
    cmd = [cc, *flags, str(source), "-o", str(out)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise _BuildFailed(f"{cc} timed out after {COMPILE_TIMEOUT_S:g} s", final=True) from exc
    except OSError as exc:
        raise _BuildFailed(f"{cc} does not run ({exc})", final=True) from exc
    if res.returncode != 0:
        raise _BuildFailed(res.stderr.strip()[-400:] or f"{cc} exited with {res.returncode}")


def _build(cc: str, flags: list[str], want: dict, path: Path | None, build: Build) -> ctypes.CDLL:
    """Compile into a fresh temporary file (in the cache folder when it is writable, so
    that a system temp mounted noexec does not matter), load and check it from there, then
    store it under ``path`` (None: not cached)."""
    near = path is not None and os.access(path.parent, os.W_OK | os.X_OK)
    try:
        tmp = tempfile.TemporaryDirectory(prefix=".build-", dir=path.parent if near else None)
    except OSError as exc:
        raise _BuildFailed(f"no folder to build in ({exc})", final=True) from exc
    with tmp:
        out = Path(tmp.name) / "kernel.so"
        _compile(cc, flags, out, build.source)
        data = out.read_bytes()
        try:
            lib = ctypes.CDLL(str(out))
        except OSError as exc:
            raise _BuildFailed(f"the new library does not load ({exc})") from exc
        problem = _variant_problem(lib, want, build.symbol)
        if problem is not None:
            raise _BuildFailed(f"the new library is wrong: {problem}")
        if path is not None:
            _store(path, data, want, flags, build.source)
    return lib


def _cache_folder() -> Path | None:
    """The cache folder, created (private) when missing; None, with a warning, when it
    cannot be. A folder others could have written to (:func:`trust_problem`) is not used:
    the private default ``~/.cache/mfsym/kernels`` is, when that one is safe."""
    folder = _cache_dir()
    for candidate in dict.fromkeys([folder, _private_cache_dir()]):
        made = _make_folder(candidate)
        if made is None:
            return None
        problem = trust_problem(made)
        if problem is None:
            return made
        log.warning(
            "native kernel cache %s is not safe to load libraries from: %s (a library "
            "planted there would run as you); %s", made, problem,
            "using the private cache instead" if candidate != _private_cache_dir()
            else "kernels are built uncached",
        )
    return None


def _make_folder(folder: Path) -> Path | None:
    if folder.exists() and not folder.is_dir():
        log.warning(
            "native kernel cache %s is not a folder; kernels are built uncached (point "
            "MFSYM_KERNEL_CACHE at a folder)", folder,
        )
        return None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        log.warning(
            "native kernel cache %s cannot be created (%s); kernels are built uncached",
            folder, exc,
        )
        return None
    return folder


def obtain_library(unit: Unit, dtype: torch.dtype) -> ctypes.CDLL:
    """The kernels of ``unit`` in ``dtype`` (:func:`obtain`)."""
    return obtain(shallow_build(unit, dtype))


def obtain(build: Build) -> ctypes.CDLL:
    """The library of ``build``: a verified cached library, else a fresh build.

    Builds are tried with ``-march=native -fopenmp``, then ``-fopenmp``, then neither; each
    has its own cache key.  A cached library is loaded only if its record's SHA-256 and
    variant match and, once loaded, its variant symbol agrees; otherwise it is rebuilt
    (once, into a fresh file renamed into place).  Raises :class:`NativeUnavailable` with
    every compiler error when nothing builds.
    """
    cc = find_compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler found (set CC or install gcc)")
    version = compiler_version(cc)
    folder = _cache_folder()
    errors = []
    for extra in _OPTIONAL_FLAGS:
        flags = [*FLAGS, *extra, *build.macros]
        want = build.want("-fopenmp" in extra)
        key = cache_key(version, flags, build.sources)
        path = None if folder is None else folder / f"mfsym_{key}.so"
        if path is not None and (path.exists() or path.is_symlink()):
            lib = _load_cached(path, want, build.symbol)
            if lib is not None:
                return lib
        try:
            lib = _build(cc, flags, want, path, build)
        except _BuildFailed as exc:
            errors.append(f"{' '.join(extra) or 'plain'}: {exc}")
            if exc.final:
                break
        else:
            log.info("built native kernel %s (%s)", path or "uncached", " ".join(extra) or "-")
            return lib
    raise NativeUnavailable("the C compiler failed:\n" + "\n".join(errors))


def _loaded(build: Build, declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL:
    """The library of ``build``, obtained and declared once per process."""
    key = (build.source.name, *build.macros)
    with _LOCK:
        if key not in _LIBS:
            lib = obtain(build)
            declare(lib)
            _LIBS[key] = lib
        return _LIBS[key]


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
    if hasattr(lib, "mfsym_steps"):  # the step kernel (matrix and uv units)
        _declare_steps(lib.mfsym_steps, lib.mfsym_steps_sizes)
        lib.mfsym_steps_gated.argtypes = [*lib.mfsym_steps.argtypes, ptr, i32]
        lib.mfsym_steps_gated.restype = i32
        lib.mfsym_gate_open.argtypes = [ptr]
        lib.mfsym_gate_open.restype = None


def _declare_steps(fn, sizes) -> None:
    """The arguments of ``mfsym_steps`` and ``mfsym_steps_sizes`` (and of the ResNet's
    ``mfsym_deep_steps``, ``mfsym_deep_steps_sizes``)."""
    i64, ptr, i32, f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    fn.argtypes = [
        i64, i64, i64, i64, i64, ptr, ptr, i64, ptr, i64, ptr, ptr, f64, ptr, ptr, i64,
        i64, ptr, ptr, ptr, ptr, f64, f64, f64, ptr, ptr, ptr, ptr, i64, ptr, ptr, i32,
    ]
    fn.restype = i32
    sizes.argtypes = [i64, i64, i64, i32, ptr, ptr]
    sizes.restype = None


def _declare_deep(lib: ctypes.CDLL) -> None:
    """The ResNet's ``mfsym_deep_{output,fused,sizes}`` take the arguments of the one-layer
    ``mfsym_{output,fused,sizes}`` (which the library also holds), ``mfsym_deep_steps``
    those of ``mfsym_steps``."""
    _declare(lib)
    for name in ("output", "fused", "sizes"):
        one, deep = getattr(lib, f"mfsym_{name}"), getattr(lib, f"mfsym_deep_{name}")
        deep.argtypes, deep.restype = one.argtypes, one.restype
    _declare_steps(lib.mfsym_deep_steps, lib.mfsym_deep_steps_sizes)


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
            self.lib.mfsym_steps(*args)
        else:
            self.lib.mfsym_steps_gated(*args, ctypes.addressof(gate.flag), gate.first)
        return new

    def gate(self, first: int) -> Gate:
        """A gate for :meth:`steps`, open; the team threads with ids ≥ ``first`` (≥ 1: the
        caller's own thread, id 0, never waits) wait at it while it is closed."""
        if not hasattr(self.lib, "mfsym_gate_open"):
            raise NativeUnavailable("this library's step kernel has no gate")
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
    :meth:`steps_workspace` and :meth:`steps` (K whole steps, ``mfsym_deep_steps``), with
    particles ``theta (R, N, D)``, N = L·M layer-major.  The per-particle pull-back of a
    one-layer model (``force``, ``step``) has no meaning here."""

    def __init__(self, lib: ctypes.CDLL, model, dtype: torch.dtype):
        symbols = SimpleNamespace(
            mfsym_output=lib.mfsym_deep_output, mfsym_fused=lib.mfsym_deep_fused,
            mfsym_sizes=lib.mfsym_deep_sizes, mfsym_steps=lib.mfsym_deep_steps,
            mfsym_steps_sizes=lib.mfsym_deep_steps_sizes,
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
