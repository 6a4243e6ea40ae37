"""The step kernel against this CPU's own floor, and against the first kernel, in one run.

Floor.  ``mfsym_floor`` (compiled with the kernel, same flags and vector width) measures,
in thread CPU time, ns per vector lane of: an FMA at full throughput, the kernel's
exponential and the reciprocal ``1/(1 + v)``.  The paper's unit (2×2 matrix, sigmoid) needs
per particle-sample update, from its formulas (forward ``h_k = Σ_l z_kl x_l``,
``a_k = 1/(1 + e^{−h_k})``, the sum over particles; backward ``a_k(1 − a_k)`` stored, then
``w_k = a_k(1 − a_k) c_k`` and ``F_kl += w_k x_l``):

* FMA-class operations: ``dy·dx`` (pre-activation) + ``dy`` (the sum over particles) +
  ``2 dy`` (the derivative) + ``dy`` (``w``) + ``dy·dx`` (the force) = 16;
* exponentials: ``dy`` = 2; reciprocals: ``dy`` = 2.

floor (ns per update on one core) = 16 t_fma + 2 t_exp + 2 t_rcp.  Loads, stores, the
update (once per particle, not per sample) and the threads' coordination are left out, so
no kernel reaches it.  With T threads the per-lane figures are measured by T threads at
once (each in its own CPU time), and the wall-time floor is floor / T: cores that share
execution units or caches raise it.

Kernel.  The native call alone (no sampling, targets or Python bookkeeping): the step kernel
``mfsym_steps`` over ``K`` steps in one call, the first kernel ``mfsym_fused`` once per
step; ns per update = wall time / (K · R · N · B), median of repeats.
"""

from __future__ import annotations

import statistics
import time

import torch

from mfsym.core.units import make_unit
from mfsym.engine import native
from mfsym.engine.kernels import NativeKernel, NativeV1Kernel, Tally, UpdateSpec

#: FMA-class operations, exponentials and reciprocals per update of the paper's unit.
OPS = {"fma": 16, "exp": 2, "reciprocal": 2}


def floor_ns(lib, repeat: int = 5, reps: int = 4000,
             threads: int = 1) -> tuple[float, dict[str, float]]:
    """ns per update on one core, with ``threads`` measuring at once, and the per-lane
    figures (medians of ``repeat``)."""
    runs = [lib.floor(reps, threads) for _ in range(repeat)]
    per_op = {k: statistics.median(r[k] for r in runs) for k in OPS}
    return sum(OPS[k] * per_op[k] for k in OPS), per_op


def _spec(R: int) -> UpdateSpec:
    off = torch.zeros(R, dtype=torch.bool)
    return UpdateSpec(lr=1e-3, wd=2e-4, sigma=1e-3, proj=None, proj_on=off, noise_proj=None,
                      noise_on=off, noise_row=torch.arange(R) % 4, c0=0.1)


def kernel_ns(kind, R: int, N: int, threads: int, K: int = 32, B: int = 20,
              repeat: int = 5) -> tuple[float, float]:
    """Median ns per update of the native call alone and its spread (max − min over the
    median), for ``kind`` :class:`NativeKernel` or :class:`NativeV1Kernel`."""
    unit = make_unit("matrix", 2, 2, "sigmoid")
    kern = kind(unit, torch.float32)
    gen = torch.Generator().manual_seed(0)
    theta = 0.25 * torch.randn(R, N, 4, generator=gen)
    x = torch.randn(K, R, B, 2, generator=gen)
    y = torch.rand(K, R, B, 2, generator=gen)
    xi = torch.randn(4, K, N, 4, generator=gen)
    spec = _spec(R)
    tally = Tally(torch.zeros(R, dtype=torch.float64), torch.full((R,), -1))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kern.advance_many(theta, x, y, xi, spec, tally, 0)  # warm-up
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            kern.advance_many(theta, x, y, xi, spec, tally, 0)
            samples.append(1e9 * (time.perf_counter() - t0) / (K * R * N * B))
    finally:
        torch.set_num_threads(before)
    med = statistics.median(samples)
    return med, (max(samples) - min(samples)) / med


def report(threads: int, R: int = 12, N: int = 5000, repeat: int = 5) -> None:
    """Print the floor, both kernels' ns per update and their ratios to the floor."""
    lib = native.load_library(make_unit("matrix", 2, 2, "sigmoid"), torch.float32)
    lanes = native.library_variant(lib.lib)["lanes"]
    floor, per_op = floor_ns(lib, repeat, threads=threads)
    print(f"\nfloor of this CPU ({lanes} float lanes per vector; ns per lane, each thread's "
          f"CPU time, {threads} thread(s) at once): "
          + ", ".join(f"{k} {v:.4f}" for k, v in per_op.items()))
    print(f"  paper's unit: {OPS['fma']} FMA + {OPS['exp']} exp + {OPS['reciprocal']} "
          f"reciprocals per update = {floor:.3f} ns per update on one core, "
          f"{floor / threads:.3f} ns with {threads} thread(s)")
    print(f"  kernel alone, stack {R}, N = {N}, vanilla, float32, {threads} thread(s):")
    for kind in (NativeKernel, NativeV1Kernel):
        ns, spread = kernel_ns(kind, R, N, threads, repeat=repeat)
        print(f"    {kind.name:>10}: {ns:.3f} ns per update (±{100 * spread:.0f}%), "
              f"{ns * threads / floor:.2f}× the floor", flush=True)
