"""The deterministic inputs of a run: its initial cloud, the risk's sample, its streams.

Every input is a function of whole numbers only.  The initial cloud ``(N, D)`` depends on
``(seed, N, init_std)``, the SI start being the WI draw projected on E^G; the evaluation
sample ``(n_eval, dx)`` on ``eval_seed``; the torch seed of a random stream on
``(seed, N)`` and the stream's tag (see "Randomness" in :mod:`mfsym.engine.training`).
Each is drawn from a NumPy ``SeedSequence`` of those numbers, so it is the same on every
machine, in every stack and under every backend.
"""

from __future__ import annotations

import numbers
import zlib
from dataclasses import dataclass

import numpy as np

from ..core.groups import FiniteGroup
from ..core.schemes import INITS


@dataclass(frozen=True)
class RunSpec:
    """One run of a stack: which teacher, which scheme (or variant, e.g. "DA-orbit"), which
    seed; ``stream``: a tag giving the run a random stream of its own (default: the stream
    the coupling assigns)."""

    teacher: str
    scheme: str
    seed: int
    stream: str = ""


#: Stream tag of a same-scheme floor run: the start of its (teacher, scheme, seed), random
#: streams of its own (the second run that claim 1's floor compares with).
BASELINE_STREAM = "baseline"

#: The most numbers N·D an initial cloud may hold: 2²⁵, 256 MiB in float64 (N = 8·10⁶
#: particles of dimension 4). Training costs N²·T·B updates per run, so no run this engine
#: can finish comes near it; a larger N is refused by name before anything is allocated.
MAX_CLOUD_NUMBERS = 1 << 25


def count_arg(value, name: str) -> int:
    """A positive integer given as any integral type (Python or NumPy), as ``int``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_):
        if value >= 1:
            return int(value)
    raise ValueError(
        f"{name} must be an integer ≥ 1 (a Python or NumPy integer), got {value!r} "
        f"of type {type(value).__name__}"
    )


def _seed_sequence(*key: int) -> np.random.SeedSequence:
    """The NumPy seed sequence of ``key``: whole numbers ≥ 0 (a seed, N, a tag)."""
    for k in key:
        if isinstance(k, bool | np.bool_) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"seed must be an integer ≥ 0 (a Python or NumPy integer), got "
                             f"{k!r} of type {type(k).__name__}")
    return np.random.SeedSequence([int(k) for k in key])


def cloud_size_problem(n_particles: int, dim: int) -> str | None:
    """Why a cloud of ``n_particles`` particles in R^dim is too large (N·dim numbers above
    :data:`MAX_CLOUD_NUMBERS`), or None when it is not."""
    if n_particles * dim <= MAX_CLOUD_NUMBERS:
        return None
    return (f"N = {n_particles} particles of dimension {dim} make a cloud of "
            f"{n_particles * dim} numbers; an initial cloud holds at most "
            f"{MAX_CLOUD_NUMBERS} (N ≤ {MAX_CLOUD_NUMBERS // dim} here)")


def initial_particles(
    group: FiniteGroup, n_particles: int, seed: int, init: str, init_std: float = 0.25
) -> np.ndarray:
    """Initial cloud ``(N, D)``: i.i.d. ``N(0, init_std²)`` entries (WI), projected on E^G (SI).

    Depends only on (seed, N): the SI start is the WI start projected.
    """
    if init not in INITS:
        raise ValueError(f"unknown initialisation {init!r}; allowed: {list(INITS)}")
    n_particles = count_arg(n_particles, "N")
    problem = cloud_size_problem(n_particles, group.dim_z)
    if problem:
        raise ValueError(problem)
    rng = np.random.default_rng(_seed_sequence(seed, n_particles, 1))
    theta = init_std * rng.standard_normal((n_particles, group.dim_z))
    return group.project(theta) if init == "SI" else theta


def evaluation_inputs(n_eval: int, dim_x: int, input_std: float, eval_seed: int) -> np.ndarray:
    """The fixed Monte-Carlo sample of the population risk, ``(n_eval, dx)``."""
    rng = np.random.default_rng(_seed_sequence(eval_seed, 7))
    return input_std * rng.standard_normal((n_eval, dim_x))


def stream_seed(seed: int, n_particles: int, tag: str = "") -> int:
    """The torch seed of a random stream (data, DA draws, noise): the seed's common stream,
    or with a ``tag`` another stream of the same seed."""
    key = (seed, n_particles, 2) + ((zlib.crc32(tag.encode()),) if tag else ())
    # shift a Python int: under NumPy 1.x, np.uint64 >> int is a casting error
    return int(_seed_sequence(*key).generate_state(1, dtype=np.uint64)[0]) >> 1


def stream_tag(run: RunSpec, coupling: str) -> str:
    """The tag of the stream ``run`` draws from ("": its seed's common stream)."""
    if run.stream:
        return run.stream
    return run.scheme if coupling == "independent" else ""

