"""Standard normal numbers for torch CPU generators, drawn natively with torch's own bits.

A single run draws its own noise, ``ξ (k, N, D)`` per chunk of k steps; through
``torch.randn`` that costs about 3.4 ns per float32 number and 17 ns per float64 one on
the machines this was written on, as much as the run's kernel.  ``torch.randn`` on a CPU
generator, for n ≥ 16 numbers into a contiguous tensor, is a fixed recipe (spelled out in
``csrc/mfsym_normal.c``): n uniforms from the generator's MT19937 stream, then
Box–Muller per block of 16, the last block redrawn when 16 does not divide n.  The native
generator follows the recipe from the generator's state (``Generator.get_state``: the 624
words, the countdown and the cursor) and writes the advanced state back, so the numbers,
and every later draw from the generator, are the same as torch's.

Only the evaluation of log, cos and sin decides the last bits, and torch's CPU build has
two: the C library's functions per number, or single-precision polynomials in 8-wide
vectors (float32 on x86 machines with AVX2).  Which one a given torch uses depends on
its build and the machine, so nothing is assumed: before the native generator is used
for a dtype, :func:`native_normal` draws from several seeds, sizes and stream positions
both ways and compares every bit and the generator's state after; the first variant that
agrees everywhere serves the rest of the process, and where none does (another torch,
another C library) the draws stay ``torch.randn``'s.  The tests go further: every one of
the 2²⁴ float32 uniforms, in both places of a Box–Muller pair.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import torch

from .native import NativeUnavailable, load_normal_library
from .native_build import library_variant

log = logging.getLogger(__name__)

#: Variants tried per dtype, in order (codes of ``mfsym_normal_f32/f64``).
VARIANTS = {torch.float32: (1, 0), torch.float64: (0,)}
#: What the codes mean.
VARIANT_NAMES = {0: "libm", 1: "vector"}
#: Bytes of a torch CPU generator's state, and where its parts lie: the countdown (int32),
#: the cursor (int64) and the 624 words (one uint64 each).
STATE_BYTES = 5056
LEFT_AT, NEXT_AT, WORDS_AT = 8, 16, 24
#: How a training's normal numbers may be drawn ("auto": natively where that reproduces
#: torch.randn here, else by torch.randn; "torch": by torch.randn).
NORMAL_DRAWS = ("auto", "torch")


def check_normal_draws(value) -> str:
    """``value`` if it is one of :data:`NORMAL_DRAWS`, else a ``ValueError`` naming them."""
    if value not in NORMAL_DRAWS:
        raise ValueError(f"normal_draws = {value!r}; allowed: {list(NORMAL_DRAWS)}")
    return value


#: Fewer numbers than this are left to torch (the state's round trip costs microseconds).
MIN_NUMBERS = 4096

_LOCK = threading.Lock()
_CHOSEN: dict[torch.dtype, NativeNormal | None] = {}


class NativeNormal:
    """The native generator for one dtype and variant: :meth:`fill` draws like
    ``torch.randn(out.shape, generator=gen, out=out)``."""

    def __init__(self, lib: ctypes.CDLL, dtype: torch.dtype, variant: int):
        if dtype not in VARIANTS or variant not in VARIANTS[dtype]:
            raise ValueError(f"no native normal variant {variant!r} for {dtype}; allowed: "
                             f"{ {str(k): v for k, v in VARIANTS.items()} }")
        self.lib, self.dtype, self.variant = lib, dtype, variant
        self._fn = lib.mfsym_normal_f32 if dtype == torch.float32 else lib.mfsym_normal_f64

    @property
    def name(self) -> str:
        return VARIANT_NAMES[self.variant]

    def fill(self, gen: torch.Generator, out: torch.Tensor) -> None:
        """Standard normal numbers into ``out`` (CPU, this dtype, contiguous, ≥ 16
        numbers) from ``gen``, whose state advances as ``torch.randn`` would advance it."""
        if gen.device.type != "cpu":
            raise ValueError(f"the generator is on {gen.device}; allowed: a CPU generator")
        if out.dtype != self.dtype or out.device.type != "cpu" or not out.is_contiguous():
            raise ValueError(f"out is {out.dtype} on {out.device}, contiguous "
                             f"{out.is_contiguous()}; allowed: contiguous {self.dtype} on cpu")
        if out.numel() < 16:
            raise ValueError(f"out holds {out.numel()} numbers; allowed: 16 or more")
        state = gen.get_state()
        if state.numel() != STATE_BYTES:
            raise NativeUnavailable(f"this torch's generator state has {state.numel()} bytes, "
                                    f"not {STATE_BYTES}")
        base = state.data_ptr()
        rc = self._fn(base + WORDS_AT, base + LEFT_AT, base + NEXT_AT, out.data_ptr(),
                      out.numel(), self.variant)
        if rc != 0:
            raise ValueError("the generator's state is not one torch's MT19937 can be in "
                             "(countdown 1 to 624, cursor within the words, words < 2^32)")
        gen.set_state(state)


def _probe(seed: int, skip: int) -> torch.Generator:
    """A generator seeded with ``seed`` that has drawn ``skip`` words."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    if skip:
        torch.randint(0, 2**31 - 1, (skip,), generator=gen)  # one word each
    return gen


#: (seed, words skipped first, numbers) of the check: a fresh stream, a stream part-way
#: and one word before a twist, sizes below, at and across blocks of 16 and twists.
CHECKS = ((0, 0, 16), (1, 5, 17), (12345, 623, 1000), (2**40 + 3, 100, 4099),
          (7, 622, 20000))


def agrees(candidate: NativeNormal) -> bool:
    """Whether ``candidate`` gives ``torch.randn``'s numbers and leaves the generator in
    torch's state, bit for bit, on every case of :data:`CHECKS`."""
    for seed, skip, n in CHECKS:
        ours, theirs = _probe(seed, skip), _probe(seed, skip)
        got = torch.empty(n, dtype=candidate.dtype)
        candidate.fill(ours, got)
        want = torch.randn(n, generator=theirs, dtype=candidate.dtype)
        if not torch.equal(got.view(torch.uint8), want.view(torch.uint8)):
            return False
        if not torch.equal(ours.get_state(), theirs.get_state()):
            return False
    return True


def native_normal(dtype: torch.dtype) -> NativeNormal | None:
    """The native generator for ``dtype`` that reproduces ``torch.randn`` in this process,
    or None (no compiler, another state layout, or no variant agrees: see the log)."""
    with _LOCK:
        if dtype in _CHOSEN:
            return _CHOSEN[dtype]
        chosen = None
        if dtype in VARIANTS:
            try:
                lib = load_normal_library()
            except NativeUnavailable as exc:
                log.info("normal numbers drawn by torch.randn: %s", exc)
            else:
                chosen = _first_agreeing(lib, dtype)
        _CHOSEN[dtype] = chosen
        return chosen


def vector_fma(lib: ctypes.CDLL) -> bool:
    """Whether the library's vector variant has its fused multiply-adds as instructions.
    Built without them (no ``-march=native``) it gives the same numbers through a per-lane
    ``fmaf``, about 5× slower than ``torch.randn``, so it is not used."""
    return bool(library_variant(lib, "mfsym_normal_variant")["vector_fma"])


def _first_agreeing(lib: ctypes.CDLL, dtype: torch.dtype) -> NativeNormal | None:
    tried = []
    for variant in VARIANTS[dtype]:
        if VARIANT_NAMES[variant] == "vector" and not vector_fma(lib):
            log.info("the vector variant of the native normal numbers is not used: its "
                     "library was built without fused multiply-add instructions")
            continue
        candidate = NativeNormal(lib, dtype, variant)
        try:
            ok = agrees(candidate)
        except (NativeUnavailable, ValueError, RuntimeError) as exc:
            log.info("normal numbers drawn by torch.randn: %s", exc)
            return None
        if ok:
            log.info("%s normal numbers drawn natively (%s variant, checked bit for bit "
                     "against torch.randn)", str(dtype).removeprefix("torch."), candidate.name)
            return candidate
        tried.append(candidate.name)
    log.info("%s normal numbers drawn by torch.randn: no native variant (%s) gives its bits "
             "with this torch on this machine", str(dtype).removeprefix("torch."),
             ", ".join(tried))
    return None
