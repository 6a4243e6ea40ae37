"""The tangent kernel of a particle cloud and the energy identity (PAPER.md §9b, item 4).

Kernel.  For particles ``θ (N, D)`` and inputs ``x (S, dx)``,

    K(x_s, x_t) = (1/N) Σᵢ J_i(x_s) J_i(x_t)ᵀ,   J_i(x) = ∂σ*(x, θᵢ)/∂θᵢ  (dy, D),

stored as ``(S, dy, S, dy)`` (:func:`tangent_kernel`).  It is the kernel of both scalings:
the mean-field network ``(1/N) Σᵢ σ*`` trained with the engine's force ``F = N ∇L``, and the
NTK network ``(1/√N) Σᵢ σ*`` trained by gradient descent, both have
``df(x)/dτ = −(2/S) Σ_t K(x, x_t) r(x_t)`` in their own function time τ.

Energy identity.  The engine's gradient descent on ``L = (1/S) Σ_s ‖r_s‖²``, ``r = Φ_N − y``,
is ``θᵢ ← θᵢ − η Fᵢ`` with ``Fᵢ = N ∇ᵢL = (2/S) Σ_s J_i(x_s)ᵀ r_s``; in flow time s = η·step
(α absorbed, the normalisation of :mod:`mfsym.studies.noether_base`) the flow is autonomous,
``dθᵢ/ds = −Fᵢ``, and

    dL/ds = −(1/N) Σᵢ ‖Fᵢ‖² = −(4/S²) Σ_{s,t} r_sᵀ K(x_s, x_t) r_t        (energy_rate)

(time symmetry: no explicit time in the flow, so L can only decrease at this rate).  Along
the discrete steps ``(L_{k+1} − L_k)/η`` differs from it by O(η) (:func:`energy_defect`).

Jacobians come from autograd through :meth:`Unit.per_particle` in float64, independent of
the engine's closed-form pull-backs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.units import Unit

F64 = torch.float64


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=F64)


def unit_jacobians(theta, x, unit: Unit) -> np.ndarray:
    """``J_i(x_s) = ∂σ*(x_s, θᵢ)/∂θᵢ`` for clouds ``(..., N, D)``: shape (..., S, dy, N, D)."""
    th, xs = _t(theta), _t(x)
    if th.dim() < 2:
        raise ValueError(f"unit_jacobians takes clouds (..., N, D), got shape {tuple(th.shape)}")

    def summed(p):  # Σᵢ σ*(x_s, θᵢ): row i of its Jacobian is particle i's own
        return unit.per_particle(p, xs).sum(-2)

    flat = th.reshape(-1, *th.shape[-2:])
    jac = torch.func.vmap(torch.func.jacrev(summed))(flat)
    return jac.reshape(*th.shape[:-2], *jac.shape[1:]).numpy()


def tangent_kernel(theta, x, unit: Unit) -> np.ndarray:
    """``K(x_s, x_t) = (1/N) Σᵢ J_i(x_s) J_i(x_t)ᵀ``, shape (..., S, dy, S, dy)."""
    jac = unit_jacobians(theta, x, unit)
    return np.einsum("...akid,...blid->...akbl", jac, jac) / jac.shape[-2]


def residuals(theta, x, y, unit: Unit) -> np.ndarray:
    """``r_s = (1/N) Σᵢ σ*(x_s, θᵢ) − y_s`` for clouds (..., N, D): shape (..., S, dy)."""
    with torch.no_grad():
        out = unit.per_particle(_t(theta), _t(x)).mean(-2).numpy()
    return out - np.asarray(y, dtype=np.float64)


def energy_rate(theta, x, y, unit: Unit) -> tuple[np.ndarray, np.ndarray]:
    """``(L, (4/S²) rᵀ K r)`` for clouds (..., N, D): the loss and minus its flow-time
    derivative, each of shape (...)."""
    r = residuals(theta, x, y, unit)
    k = tangent_kernel(theta, x, unit)
    s = r.shape[-2]
    return (r**2).sum(-1).mean(-1), 4.0 / s**2 * np.einsum("...ak,...akbl,...bl->...", r, k, r)


def energy_defect(thetas, x, y, unit: Unit, eta: float) -> tuple[float, np.ndarray]:
    """Relative defect of the energy identity along consecutive steps ``thetas (K+1, N, D)``:

    ``max_k |(L_{k+1} − L_k)/η + (4/S²) r_kᵀ K_k r_k| / max_k (4/S²) r_kᵀ K_k r_k``, and the
    per-step rates ``(4/S²) r_kᵀ K_k r_k`` (K,).
    """
    if not eta > 0:
        raise ValueError(f"step size eta must be > 0, got {eta!r}")
    losses, rates = energy_rate(thetas, x, y, unit)
    rates = rates[:-1]
    slope = np.diff(losses) / eta
    return float(np.abs(slope + rates).max() / np.abs(rates).max()), rates


def kernel_movement(k0, k1) -> float:
    """``‖K_1 − K_0‖_F / ‖K_0‖_F``."""
    a, b = np.asarray(k0, dtype=np.float64), np.asarray(k1, dtype=np.float64)
    return float(np.linalg.norm((b - a).ravel()) / np.linalg.norm(a.ravel()))


def particle_movement(theta0, theta1) -> float:
    """``(mean_i ‖θᵢ(1) − θᵢ(0)‖² / mean_i ‖θᵢ(0)‖²)^{1/2}`` for clouds (N, D)."""
    a, b = np.asarray(theta0, dtype=np.float64), np.asarray(theta1, dtype=np.float64)
    return float(np.sqrt(((b - a) ** 2).sum() / (a**2).sum()))
