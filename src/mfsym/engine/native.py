"""Fused CPU kernels in C for the per-step force and update (backend ``native``).

The C source is a file shipped with the package, ``csrc/mfsym_kernel.c``.  For one unit,
activation, size and dtype it is built with ``-D`` macros that fix every size at compile
time (see :func:`build_macros`), by the system C compiler (OpenMP, ``-O3 -march=native``),
into a cached shared library called through :mod:`ctypes`.

What the kernels compute (shapes as in :mod:`mfsym.core.units`; R runs, N particles, S samples):

* ``output``: ``Φ_N(x_s) = (1/N) Σ_n σ*(x_s, P θ_n)``, ``(R, S, dy)``, with P the run's
  model projector (P_E for EA, else the identity);
* ``force``: the pull-back ``F_n = Σ_s J_n(x_s)ᵀ c_s``, ``(R, N, D)``;
* ``step``: the whole noisy SGD update of PAPER.md §4 in one pass,
  ``θ ← θ − lr · Π_d[F(Pθ) + wd θ] + σ · Π_n ξ``, never storing F.

Speed comes from (i) one pass per phase over the particles, kept in cache-sized chunks
of ``CH`` particles stored feature-major so the loops vectorise over particles, (ii) the
activation and its derivative computed from one pre-activation, (iii) a branch-free,
vectorisable exponential (Cody–Waite reduction ``v = n ln2 + r``, |r| ≤ ln2/2, Taylor
polynomial of degree 7 / 13 in float32 / float64, scaling by 2ⁿ through the exponent
bits; relative error about one unit in the last place, NaN propagates).

Determinism.  Work is split into (run, chunk) items whose boundaries depend only on N;
partial sums over particles are kept per chunk (in float64) and added in chunk order, so
the result is the same bit for bit whatever the number of threads and whatever other
runs share the call.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from ..core.units import Unit

log = logging.getLogger(__name__)

#: The C file of the kernels (package data).
SOURCE = Path(__file__).with_name("csrc") / "mfsym_kernel.c"

#: Build-time codes of the units and activations (``MFSYM_UNIT``, ``MFSYM_ACT``).
UNIT_CODE = {"matrix": 1, "uv": 2}
ACT_CODE = {"sigmoid": 1, "tanh": 2, "relu": 3, "leaky_relu": 4, "linear": 5}
DTYPE_CODE = {torch.float32: 0, torch.float64: 1}

#: GNU C (not ISO) so that a·b + c contracts to one fused multiply-add.
FLAGS = [
    "-O3", "-std=gnu11", "-ffp-contract=fast", "-fPIC", "-shared", "-fno-math-errno",
    "-fno-trapping-math",
]
_OPTIONAL_FLAGS = (["-march=native", "-fopenmp"], ["-fopenmp"], [])

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
    return [f"-DMFSYM_{k}={v}" for k, v in values.items()]


def find_compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the PATH (None: none)."""
    cc = os.environ.get("CC")
    if cc:
        return cc
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _cache_dir() -> Path:
    env = os.environ.get("MFSYM_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mfsym" / "kernels"


def _machine_id() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return platform.machine() + "|" + "|".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + "|" + platform.processor()


def _compiler_id(cc: str) -> str:
    try:
        res = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return res.stdout.splitlines()[0] if res.stdout else cc
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeUnavailable(f"C compiler {cc!r} does not run ({exc})") from exc


def _build(macros: list[str]) -> Path:
    """Compile :data:`SOURCE` with ``macros`` into a cached shared library; its path."""
    cc = find_compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler found (set CC or install gcc)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\n".join([
            source, _compiler_id(cc).encode(), " ".join(FLAGS + macros).encode(),
            _machine_id().encode(),
        ])
    ).hexdigest()[:24]
    folder = _cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir()) / f"mfsym-kernels-{os.getuid()}"
        folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"mfsym_{key}.so"
    if target.exists():
        return target
    errors = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for extra in _OPTIONAL_FLAGS:
            out = Path(tmp) / "kernel.so"
            cmd = [cc, *FLAGS, *extra, *macros, str(SOURCE), "-o", str(out)]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode == 0:
                os.replace(out, target)  # atomic: concurrent builders write the same bytes
                log.info("built native kernel %s (%s)", target.name, " ".join(extra) or "-")
                return target
            errors.append(f"{' '.join(extra) or 'plain'}: {res.stderr.strip()[-400:]}")
    raise NativeUnavailable("the C compiler failed:\n" + "\n".join(errors))


def load_library(unit: Unit, dtype: torch.dtype) -> ctypes.CDLL:
    """The compiled kernels for ``unit`` and ``dtype`` (built once, then cached)."""
    macros = build_macros(unit, dtype)
    key = tuple(macros)
    with _LOCK:
        if key not in _LIBS:
            lib = ctypes.CDLL(str(_build(macros)))
            _declare(lib)
            _LIBS[key] = lib
        return _LIBS[key]


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
    for fn in (lib.mfsym_output, lib.mfsym_force, lib.mfsym_step, lib.mfsym_fused):
        fn.restype = i32
