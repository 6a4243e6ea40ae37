"""Noether charges and finite-group invariance diagnostics (PAPER.md §9).

Rescaling charge.  For the ``uv`` unit ``σ*(x, (u, v)) = v · act(uᵀx / dx)`` with a
positively 1-homogeneous activation (relu, leaky_relu, linear), ``(u, v) → (c u, v / c)``
(c > 0) leaves every particle's output unchanged.  Euler's identity
``act'(h) h = act(h)`` then gives, for the force ``g = (g_u, g_v)`` of *any* loss on the
network output, ``u·g_u = v·g_v``, so the per-particle charge

    Q_i = |v_i|² − |u_i|²                                                    (charges)

is conserved by gradient flow, whatever the data, the batch or the scheme.  One step of
``z ← z − η (g + λ z)`` changes it by exactly

    Q_i ← (1 − ηλ)² Q_i + η² (|g_{v,i}|² − |g_{u,i}|²)                  (predicted_charges)

(the cross term ``−2η(1 − ηλ)(v·g_v − u·g_u)`` vanishes), hence a drift O(η) per unit of
flow time and a decay ``e^{−2λs}`` over a flow time s.

Gram charge.  For the linear activation the network is ``Φ(x) = Vᵀ U x / (N dx)`` with
``U`` (N, dx) and ``V`` (N, dy) the stacked u_i, v_i (rows); the symmetry
``(U, V) → (A U, A^{−ᵀ} V)``, A ∈ GL(N), makes the (N, N) matrix

    C = V Vᵀ − U Uᵀ,   C_ij = v_i·v_j − u_i·u_j                                (gram_charge)

conserved; its diagonal is (Q_i).  (The (dx, dx) matrix ``Σ_i v_i v_iᵀ − u_i u_iᵀ`` is not
conserved in general.)  One step gives ``C ← (1 − ηλ)² C + η² (G_v G_vᵀ − G_u G_uᵀ)``.

Finite groups.  A finite group has no charge, but an equivariant drift keeps E^G and
orbit pairings invariant: a cloud ``θ_{k,j} = M_{g_k} θ_j`` (element-major, as built by
:meth:`mfsym.core.groups.FiniteGroup.symmetrize`) stays paired, and the pairing error

    ε = max_{h, k, j} ‖θ_{(h g_k), j} − M_h θ_{k, j}‖                  (orbit_pairing_error)

measures how far a trained cloud is from that structure.

All functions take NumPy arrays (float64 math) and broadcast over leading axes.
"""

from __future__ import annotations

import numpy as np

from ..core.groups import FiniteGroup
from ..core.units import Unit


def _uv_parts(theta, unit: Unit) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)`` of particles ``(..., N, dx + dy)`` of a ``uv`` unit."""
    if unit.name != "uv":
        raise ValueError(
            f"Noether charges are defined for the 'uv' unit (rescaling symmetry), "
            f"got the {unit.name!r} unit"
        )
    arr = np.asarray(theta, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[-1] != unit.dim_z:
        raise ValueError(
            f"particles of the uv unit must have shape (..., N, {unit.dim_z}), got {arr.shape}"
        )
    return arr[..., : unit.dx], arr[..., unit.dx :]


def charges(theta, unit: Unit) -> np.ndarray:
    """Per-particle rescaling charges ``Q_i = |v_i|² − |u_i|²``, shape (..., N)."""
    u, v = _uv_parts(theta, unit)
    return (v**2).sum(-1) - (u**2).sum(-1)


def gram_charge(theta, unit: Unit) -> np.ndarray:
    """Gram charge ``C = V Vᵀ − U Uᵀ`` (``C_ij = v_i·v_j − u_i·u_j``), shape (..., N, N)."""
    u, v = _uv_parts(theta, unit)
    return v @ np.swapaxes(v, -1, -2) - u @ np.swapaxes(u, -1, -2)


def charge_drift(before, after) -> np.ndarray:
    """``max_i |Q_i(after) − Q_i(before)|`` over the last axis: (..., N) → (...).

    For Gram charges flatten the last two axes first.
    """
    a, b = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"charges before {a.shape} and after {b.shape} differ in shape")
    return np.abs(b - a).max(axis=-1)


def force_from_update(theta0, theta1, eta: float, weight_decay: float = 0.0) -> np.ndarray:
    """The force g of one noiseless step ``θ1 = θ0 − η (g + λ θ0)``: ``g = (θ0 − θ1)/η − λθ0``."""
    if not eta > 0:
        raise ValueError(f"step size eta must be > 0, got {eta!r}")
    t0, t1 = np.asarray(theta0, dtype=np.float64), np.asarray(theta1, dtype=np.float64)
    return (t0 - t1) / eta - weight_decay * t0


def predicted_charges(q0, force, unit: Unit, eta: float, weight_decay: float = 0.0):
    """Charges after one step: ``(1 − ηλ)² Q + η² (|g_v|² − |g_u|²)``, shape (..., N).

    ``q0``: charges (..., N) before the step; ``force``: per-particle force (..., N, D).
    """
    g_u, g_v = _uv_parts(force, unit)
    return (1.0 - eta * weight_decay) ** 2 * np.asarray(q0) + eta**2 * (
        (g_v**2).sum(-1) - (g_u**2).sum(-1)
    )


def charge_identity_error(theta0, theta1, unit: Unit, eta: float, weight_decay: float = 0.0):
    """Relative error of the one-step identity, g recovered from the update, shape (...).

    ``max_i |Q_i(θ1) − pred_i| / max_i ((1 − ηλ)² |Q_i(θ0)| + η² (|g_{v,i}|² + |g_{u,i}|²))``:
    zero up to rounding for homogeneous activations; of order ``1/η`` otherwise, since the
    cross term ``2η (v·g_v − u·g_u)`` no longer vanishes.
    """
    force = force_from_update(theta0, theta1, eta, weight_decay)
    q0 = charges(theta0, unit)
    pred = predicted_charges(q0, force, unit, eta, weight_decay)
    scale = (1.0 - eta * weight_decay) ** 2 * np.abs(q0) + eta**2 * (force**2).sum(-1)
    return np.abs(charges(theta1, unit) - pred).max(-1) / scale.max(-1)


def decayed_charges(q0, weight_decay: float, flow_time: float) -> np.ndarray:
    """Gradient-flow prediction under weight decay: ``Q(s) = e^{−2λs} Q(0)``."""
    return np.exp(-2.0 * weight_decay * flow_time) * np.asarray(q0, dtype=np.float64)


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (both positive, ≥ 2 points)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"need two 1-D arrays of equal length ≥ 2, got {x.shape} and {y.shape}")
    if not (np.all(x > 0) and np.all(y > 0)):
        raise ValueError("log-log slope needs positive values on both axes")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


# ---- finite groups ------------------------------------------------------------------------
def multiplication_table(group: FiniteGroup) -> np.ndarray:
    """``table[h, k]`` = index of the product ``g_h g_k``, shape (|G|, |G|).

    Products are compared on the joint representation (X, Y and Z together), which is
    faithful even when the action on Z alone is not.
    """
    mats = [np.asarray(m) for m in (group.x, group.y, group.z)]
    flat = np.concatenate([m.reshape(group.order, -1) for m in mats], axis=1)
    table = np.empty((group.order, group.order), dtype=np.int64)
    for h in range(group.order):
        prod = np.concatenate(
            [np.einsum("ij,kjl->kil", m[h], m).reshape(group.order, -1) for m in mats], axis=1
        )
        table[h] = np.abs(prod[:, None, :] - flat[None, :, :]).max(-1).argmin(-1)
    return table


def orbit_pairing_error(cloud, group: FiniteGroup) -> np.ndarray:
    """``max_{h,k,j} ‖θ_{(h g_k), j} − M_h θ_{k,j}‖`` for an element-major cloud, shape (...).

    ``cloud`` has shape (..., |G|·n, D): block k holds the images ``M_{g_k} θ_j`` of n base
    atoms, as returned by ``group.symmetrize``.  Zero iff the cloud is still orbit-paired.
    """
    arr = np.asarray(cloud, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[-1] != group.dim_z or arr.shape[-2] % group.order:
        raise ValueError(
            f"an orbit-paired cloud must have shape (..., |G|·n, {group.dim_z}) with "
            f"|G| = {group.order}, got {arr.shape}"
        )
    blocks = arr.reshape(*arr.shape[:-2], group.order, -1, group.dim_z)  # (..., |G|, n, D)
    table = multiplication_table(group)
    err = np.zeros(arr.shape[:-2])
    for h in range(group.order):
        moved = blocks @ group.z[h].T  # M_h θ_{k, j}
        target = blocks[..., table[h], :, :]  # θ_{(h g_k), j}
        err = np.maximum(err, np.sqrt(((target - moved) ** 2).sum(-1)).max((-1, -2)))
    return err


def symmetrized_inputs(x, group: FiniteGroup) -> np.ndarray:
    """The orbit of a training set, ``X ∪ gX ∪ …``: shape (|G|·n, dx), element-major."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != group.dim_x:
        raise ValueError(f"inputs must have shape (n, {group.dim_x}), got {arr.shape}")
    return np.einsum("gij,nj->gni", group.x, arr).reshape(-1, group.dim_x)
