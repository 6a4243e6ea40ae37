"""Building, caching and loading the native C libraries (see :mod:`mfsym.engine.native`).

For one model, activation, size and dtype a kernel source is built with ``-D`` macros
that fix every size (and the ResNet's depth) at compile time (:func:`build_macros`,
:class:`Build`), by the system C compiler (OpenMP, ``-O3 -march=native``), into a shared
library; the normal-number generator is one build for all.

Cache.  A library is stored as ``mfsym_<key>.so`` (key: :func:`cache_key`, over every C
file the build reads) with a JSON record of its SHA-256 and variant; it is loaded only when
the folder, the library and the record are this user's alone (:func:`trust_problem`: no
link, owned by the user or root, writable by no one else), both match and its exported
``mfsym_variant`` (``mfsym_deep_variant`` for the ResNet) agrees once loaded, else rebuilt
(:func:`obtain`).  A cache folder that fails the trust check is not used at all (warning;
the private default folder instead).
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
DEEP_ABI = 2
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
