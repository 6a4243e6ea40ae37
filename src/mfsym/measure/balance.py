"""Balanced layers: the Noether charges of multi-layer units (PAPER.md §9b, items 1–2).

``mlp`` unit, ``σ*(x, z) = W₂ act(W₁ x)`` with ``W₁ (h, dx)``, ``W₂ (dy, h)``.

* Positively 1-homogeneous act (relu, leaky_relu, linear): rescaling hidden neuron k,
  ``(row_k W₁, col_k W₂) → (c row_k W₁, col_k W₂ / c)``, leaves σ* unchanged, so the force
  ``g = (G₁, G₂)`` of any loss satisfies ``diag(G₁ W₁ᵀ) = diag(W₂ᵀ G₂)`` and the per-neuron
  balance ``b_k = |row_k W₁|² − |col_k W₂|²`` is conserved by gradient flow
  (:func:`neuron_balance`, the diagonal of :func:`layer_balance`).
* Linear act: ``σ* = W₂ W₁ x`` is invariant under ``(W₁, W₂) → (A W₁, W₂ A⁻¹)``, A ∈ GL(h), so
  ``G₁ W₁ᵀ = W₂ᵀ G₂`` and the whole (h, h) matrix ``C = W₁ W₁ᵀ − W₂ᵀ W₂`` is conserved.

One step ``z ← z − η (g + λ z)`` changes ``C`` by exactly

    C ← (1 − ηλ)² C + η² (G₁ G₁ᵀ − G₂ᵀ G₂)                            (predicted_layer_balance)

where the symmetry holds (diagonal only for relu / leaky_relu): the cross term
``−η(1 − ηλ)(G₁W₁ᵀ + W₁G₁ᵀ − G₂ᵀW₂ − W₂ᵀG₂)`` vanishes.  Hence O(η²) per step, O(η) over a
fixed flow time; tanh (not homogeneous) keeps the O(η) cross term per step.

Mean-ODE ResNet with the linear ``matrix`` unit (``σ*(h, z) = z h``), depth L, M particles per
layer (:mod:`mfsym.engine.models`): layer l maps ``h ↦ W_l h`` with
``W_l = I + Z̄_l / L``, ``Z̄_l = (1/M) Σᵢ z_{l,i}``, so ``Φ(x) = W_L ⋯ W_1 x``.  Two laws hold:

1. *Within a layer* the loss depends on the particles only through Z̄_l: every particle of a
   layer gets the same force, and the deviations ``z_{l,i} − Z̄_l`` are unchanged by every
   step (to rounding, not only to O(η²)) when λ = 0 (:func:`layer_deviations`).
2. *Between consecutive layers* the product is invariant under
   ``(W_l, W_{l+1}) → (A W_l, W_{l+1} A⁻¹)``.  The engine moves every particle of layer l by
   ``−η F / N`` with the same F, so ``W_l`` follows gradient descent with step ``η / L`` on
   the loss as a function of ``(W_1, …, W_L)``; hence ``G_l W_lᵀ = W_{l+1}ᵀ G_{l+1}`` and

       D_l = W_l W_lᵀ − W_{l+1}ᵀ W_{l+1}    (d, d),  l = 1 … L−1      (resnet_balance)

   is conserved by the flow; one step with λ = 0 changes it by exactly
   ``ΔW_l ΔW_lᵀ − ΔW_{l+1}ᵀ ΔW_{l+1}`` = ``(η/L)² (G_l G_lᵀ − G_{l+1}ᵀ G_{l+1})``.

What does *not* hold there: the same balance of the raw layer means
``Z̄_l Z̄_lᵀ − Z̄_{l+1}ᵀ Z̄_{l+1}`` (the skip connection breaks the rescaling of Z̄;
:func:`resnet_mean_balance`, the control), and any per-particle balance (a matrix unit has
no hidden layer).  Weight decay breaks law 2 (it shrinks Z̄_l, not W_l).

All functions take NumPy arrays, compute in float64 and broadcast over leading axes.
"""

from __future__ import annotations

import numpy as np


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def mlp_layers(theta, hidden: int, dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W₁, W₂)`` of mlp particles ``(..., N, h·dx + dy·h)``: (..., N, h, dx), (..., N, dy, h)."""
    arr = _f64(theta)
    k = hidden * dx
    if arr.shape[-1] != k + dy * hidden:
        raise ValueError(f"mlp particles with h={hidden}, dx={dx}, dy={dy} must have "
                         f"{k + dy * hidden} entries in the last axis, got shape {arr.shape}")
    lead = arr.shape[:-1]
    return arr[..., :k].reshape(*lead, hidden, dx), arr[..., k:].reshape(*lead, dy, hidden)


def layer_balance(theta, hidden: int, dx: int, dy: int) -> np.ndarray:
    """``C = W₁ W₁ᵀ − W₂ᵀ W₂`` per particle, shape (..., N, h, h)."""
    w1, w2 = mlp_layers(theta, hidden, dx, dy)
    return w1 @ np.swapaxes(w1, -1, -2) - np.swapaxes(w2, -1, -2) @ w2


def neuron_balance(theta, hidden: int, dx: int, dy: int) -> np.ndarray:
    """``b_k = |row_k W₁|² − |col_k W₂|²`` per particle and neuron, shape (..., N, h)."""
    w1, w2 = mlp_layers(theta, hidden, dx, dy)
    return (w1**2).sum(-1) - (w2**2).sum(-2)


def predicted_layer_balance(theta0, force, hidden: int, dx: int, dy: int, eta: float,
                            weight_decay: float = 0.0) -> np.ndarray:
    """``(1 − ηλ)² C(θ0) + η² (G₁ G₁ᵀ − G₂ᵀ G₂)`` with ``(G₁, G₂)`` the force, (..., N, h, h)."""
    g1, g2 = mlp_layers(force, hidden, dx, dy)
    kick = g1 @ np.swapaxes(g1, -1, -2) - np.swapaxes(g2, -1, -2) @ g2
    return (1.0 - eta * weight_decay) ** 2 * layer_balance(theta0, hidden, dx, dy) + eta**2 * kick


def resnet_layer_means(theta, depth: int, d: int) -> np.ndarray:
    """``Z̄_l`` of layer-major matrix particles ``(..., L·M, d·d)``: shape (..., L, d, d)."""
    arr = _f64(theta)
    if arr.shape[-1] != d * d or arr.shape[-2] % depth:
        raise ValueError(f"ResNet particles of depth {depth} and d={d} must have shape "
                         f"(..., L·M, {d * d}) with L | L·M, got {arr.shape}")
    layers = arr.reshape(*arr.shape[:-2], depth, -1, d, d)
    return layers.mean(-3)


def resnet_layer_maps(theta, depth: int, d: int) -> np.ndarray:
    """``W_l = I + Z̄_l / L``, shape (..., L, d, d)."""
    return np.eye(d) + resnet_layer_means(theta, depth, d) / depth


def _consecutive(w: np.ndarray) -> np.ndarray:
    """``w_l w_lᵀ − w_{l+1}ᵀ w_{l+1}`` for a stack (..., L, d, d): (..., L−1, d, d)."""
    low, high = w[..., :-1, :, :], w[..., 1:, :, :]
    return low @ np.swapaxes(low, -1, -2) - np.swapaxes(high, -1, -2) @ high


def resnet_balance(theta, depth: int, d: int) -> np.ndarray:
    """``D_l = W_l W_lᵀ − W_{l+1}ᵀ W_{l+1}``, shape (..., L−1, d, d) (conserved)."""
    return _consecutive(resnet_layer_maps(theta, depth, d))


def resnet_mean_balance(theta, depth: int, d: int) -> np.ndarray:
    """``Z̄_l Z̄_lᵀ − Z̄_{l+1}ᵀ Z̄_{l+1}``, shape (..., L−1, d, d) (not conserved: the control)."""
    return _consecutive(resnet_layer_means(theta, depth, d))


def predicted_resnet_balance(theta0, theta1, depth: int, d: int) -> np.ndarray:
    """``D(θ0) + ΔW_l ΔW_lᵀ − ΔW_{l+1}ᵀ ΔW_{l+1}`` for the step θ0 → θ1 (λ = 0)."""
    dw = resnet_layer_maps(theta1, depth, d) - resnet_layer_maps(theta0, depth, d)
    return resnet_balance(theta0, depth, d) + _consecutive(dw)


def layer_deviations(theta, depth: int) -> np.ndarray:
    """``z_{l,i} − Z̄_l`` of layer-major particles (..., L·M, D): shape (..., L, M, D)."""
    arr = _f64(theta)
    layers = arr.reshape(*arr.shape[:-2], depth, -1, arr.shape[-1])
    return layers - layers.mean(-2, keepdims=True)


def max_change(before, after, axes: int) -> np.ndarray:
    """``max |after − before|`` over the last ``axes`` axes, shape (...)."""
    b, a = _f64(before), _f64(after)
    if a.shape != b.shape:
        raise ValueError(f"before {b.shape} and after {a.shape} differ in shape")
    diff = np.abs(a - b)
    return diff.reshape(*diff.shape[: diff.ndim - axes], -1).max(-1)


def relative_identity_error(actual, predicted, scale, axes: int) -> np.ndarray:
    """``max |actual − predicted| / max |scale|`` over the last ``axes`` axes, shape (...)."""
    num = max_change(predicted, actual, axes)
    s = np.abs(_f64(scale))
    return num / s.reshape(*s.shape[: s.ndim - axes], -1).max(-1)
