"""How far a network is from G-equivariance, and how far two group averages differ.

For a cloud θ (N, D) the network is ``Φ(x) = (1/N) Σᵢ σ*(x, θᵢ)`` (``unit.output``).  With
inputs ``x (S, dx)``:

* :func:`equivariance_error`: with one group element ``g_s`` per input (``gx (S, dx, dx)``,
  ``gy (S, dy, dy)``, e.g. Haar draws),
  ``e = ( Σ_s ‖Φ(g_s x_s) − g_s Φ(x_s)‖² / Σ_s ‖Φ(x_s)‖² )^{1/2}`` — 0 for an equivariant
  network, O(1) for an arbitrary one;
* :func:`group_average`: the feature average over a set of elements
  ``Φ̂(x) = (1/|H|) Σ_{h ∈ H} h_y⁻¹ Φ(h_x x)`` (``hx (H, dx, dx)``, ``hy (H, dy, dy)``),
  shape (S, dy);
* :func:`relative_distance`: ``(Σ_s ‖a_s − b_s‖² / Σ_s ‖b_s‖²)^{1/2}`` of two outputs
  (S, dy), b the reference.

All in float64 on the CPU.  ``Φ`` is evaluated by the engine's native forward
(``mfsym_output`` of :mod:`mfsym.engine.native`, vectorised across particles, on torch's
thread count) wherever it builds for the unit, else by the unit's own torch forward; the
two agree to float64 rounding.  A group average over the 512-point reference subgroup of
the FA_K study evaluates N·512·S units per cloud: 2.5–2.8 s per cloud of 500 particles at
S = 1024 through torch, 0.27 s natively (two threads).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from ..engine.kernels import fused_backends, native_kernel
from ..engine.native import NativeUnavailable

F64 = torch.float64
log = logging.getLogger(__name__)


def _t(arr) -> torch.Tensor:
    return torch.as_tensor(np.asarray(arr, dtype=np.float64))


@functools.cache
def _native_forward(unit):
    """The float64 native kernel of ``unit``, or None where there is none (a unit without
    fused kernels, or no C compiler: said once in the log)."""
    if "native" not in fused_backends(unit):
        return None
    try:
        return native_kernel(unit, F64)
    except NativeUnavailable as exc:
        log.warning("native forward unavailable for the %s unit (%s); measuring with torch",
                    unit.name, exc)
        return None


#: Float64 numbers per call of the native forward's per-chunk partial sums (one per chunk
#: of particles, input and output coordinate: 64 MiB), and of the torch forward's (input,
#: particle, output coordinate) intermediates (8 MiB).
NATIVE_NUMBERS_MAX = 1 << 23
TORCH_NUMBERS_MAX = 1 << 20
#: The fewest particles in a chunk of the native kernels (``CH`` of mfsym_kernel.c).
NATIVE_CHUNK_MIN = 16


def network(unit, cloud, x) -> np.ndarray:
    """``Φ(x)`` of the cloud ``(N, D)`` at inputs ``(S, dx)``: ``(S, dy)``, in blocks of
    inputs that bound the memory of one evaluation."""
    theta, xs = _t(cloud), _t(x)
    if xs.shape[0] == 0:
        return np.zeros((0, unit.dy))
    kernel = _native_forward(unit)
    if kernel is None:
        block = TORCH_NUMBERS_MAX // (theta.shape[0] * unit.dy)

        def forward(xb):
            return unit.output(theta, xb)
    else:
        block = NATIVE_NUMBERS_MAX // (-(-theta.shape[0] // NATIVE_CHUNK_MIN) * unit.dy)

        def forward(xb):
            return kernel.output_and_pullback(theta[None], xb[None])[0][0]
    block = max(1, block)
    return torch.cat([forward(xs[i:i + block]) for i in range(0, xs.shape[0], block)]).numpy()


def relative_distance(a, b) -> float:
    """``(Σ‖a − b‖² / Σ‖b‖²)^{1/2}`` (0 when both vanish)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    den = float((b**2).sum())
    num = float(((a - b) ** 2).sum())
    return 0.0 if den == 0.0 and num == 0.0 else float(np.sqrt(num / max(den, 1e-300)))


def equivariance_error(unit, cloud, x, gx, gy) -> float:
    """Relative equivariance defect of the network for the pairs ``(x_s, g_s)``."""
    x, gx, gy = (np.asarray(a, dtype=np.float64) for a in (x, gx, gy))
    if not (x.shape[0] == gx.shape[0] == gy.shape[0]):
        raise ValueError(f"one element per input is needed: {x.shape[0]} inputs, "
                         f"{gx.shape[0]} and {gy.shape[0]} elements")
    moved = network(unit, cloud, np.einsum("sij,sj->si", gx, x))
    plain = network(unit, cloud, x)
    return relative_distance(moved, np.einsum("sij,sj->si", gy, plain))


def group_average(unit, cloud, x, hx, hy, chunk: int = 64) -> np.ndarray:
    """``(1/|H|) Σ_h h_yᵀ Φ(h_x x)`` at inputs ``(S, dx)``: ``(S, dy)`` (H in chunks)."""
    x, hx, hy = (np.asarray(a, dtype=np.float64) for a in (x, hx, hy))
    total = np.zeros((x.shape[0], unit.dy))
    for start in range(0, hx.shape[0], chunk):
        views = np.einsum("hij,sj->hsi", hx[start:start + chunk], x)
        out = network(unit, cloud, views.reshape(-1, x.shape[1])).reshape(*views.shape[:2], -1)
        total += np.einsum("hji,hsj->si", hy[start:start + chunk], out)
    return total / hx.shape[0]
