"""Implementations of the per-step force computation ``(Φ_N(x), c ↦ Σ_s J_n(x_s)ᵀ c_s)``.

The engine calls ``kernel.output_and_pullback(theta, x)`` with the shapes documented in
``mfsym.units``.  ``eager`` is the unit's own PyTorch implementation.
"""

from __future__ import annotations

import torch

from .units import Unit

BACKENDS = ("auto", "eager")


def select_kernel(unit: Unit, backend: str, device: torch.device):
    """The force kernel for ``unit`` on ``device``; raises naming the allowed backends."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; allowed: {list(BACKENDS)}")
    return unit
