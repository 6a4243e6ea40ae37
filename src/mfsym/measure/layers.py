"""RMDs of layered clouds (the mean-ODE ResNet of PAPER.md §10): per layer and pooled.

A ResNet's particles form L clouds ``a (L, M, D)`` (one per layer).  Per layer l the RMD is
that of :mod:`mfsym.measure.transport`, ``RMD_l² = W₂²(μ_l, ν_l) / (M₂(μ_l) + M₂(ν_l))``.
Pooled over layers (a choice): particles may only be coupled within their layer, i.e. W₂
on the product of the layer clouds,

    RMD_pooled² = Σ_l W₂²(μ_l, ν_l) / Σ_l (M₂(μ_l) + M₂(ν_l)),

which lies in [0, 1] like every RMD.  For the distance to the projected cloud the optimal
coupling ``z ↦ P z`` already keeps layers, so the pooled value equals the RMD of all L·M
particles pooled into one cloud; a one-layer cloud (L = 1) gives the plain RMD.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..core.groups import FiniteGroup
from .transport import second_moment, w2_squared, w2_squared_to_projection


def _layers(name: str, cloud) -> np.ndarray:
    arr = np.asarray(cloud, dtype=np.float64)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"{name} must be a layered cloud of shape (L, M, D), got {arr.shape}")
    return arr


def _ratio(w2: np.ndarray, m2: np.ndarray) -> np.ndarray:
    safe = np.where(m2 > 0, m2, 1.0)
    return np.sqrt(np.clip(np.where(m2 > 0, w2 / safe, 0.0), 0.0, 1.0))


def layered_rmd_with(a, b_of: Callable[[np.ndarray], np.ndarray],
                     w2: Callable[[np.ndarray, np.ndarray], float]):
    """``(pooled, per_layer (L,))`` RMDs between ``a (L, M, D)`` and ``b_l = b_of(l, a_l)``
    per layer l, with ``w2(a_l, b_l)`` the layer's W₂²."""
    a = _layers("cloud", a)
    w2s, m2s = np.empty(a.shape[0]), np.empty(a.shape[0])
    for layer, cloud in enumerate(a):
        other = b_of(layer, cloud)
        w2s[layer] = w2(cloud, other)
        m2s[layer] = second_moment(cloud) + second_moment(other)
    return float(_ratio(w2s.sum(), m2s.sum())), _ratio(w2s, m2s)


def layered_rmd(a, b):
    """Pooled and per-layer RMD between two layered clouds of the same depth (exact W₂)."""
    a, b = _layers("a", a), _layers("b", b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"layered clouds of different depths: {a.shape[0]} vs {b.shape[0]}")
    return layered_rmd_with(a, lambda layer, _: b[layer], w2_squared)


def layered_rmd_to_projected(a, projector):
    """Pooled and per-layer RMD(ν_l, P#ν_l) by the closed form (Brenier)."""
    p = np.asarray(projector, dtype=np.float64)
    return layered_rmd_with(a, lambda _, cloud: cloud @ p.T,
                            lambda cloud, _: w2_squared_to_projection(cloud, p))


def layered_rmd_to_symmetrized(a, group: FiniteGroup):
    """Pooled and per-layer RMD(ν_l, ν_l^G) (exact network simplex, M vs |G|·M atoms)."""
    return layered_rmd_with(a, lambda _, cloud: group.symmetrize(cloud), w2_squared)
