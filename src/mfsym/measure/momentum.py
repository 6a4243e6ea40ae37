"""The "angular momentum" of a flow under a rotation group (PAPER.md §9b, item 3).

A one-parameter group ``e^{φA}`` acting orthogonally on Z (A antisymmetric, the generator of
``M_{g_φ}``) leaves a loss L invariant iff ``d/dφ L(e^{φA} θ) = 0``, i.e.

    J(θ) = Σᵢ ⟨A θᵢ, ∇_{θᵢ} L(θ)⟩ = 0                                        (angular_momentum)

for every cloud θ: the gradient, hence every step of gradient descent, is orthogonal to the
orbit through θ.  For SO(2) rotating R^d about its last axes (:mod:`mfsym.core.compact`) and
the ``uv`` unit, ``M_g = diag(g, g)``, so ``A = diag(a, a)`` with
``a = [[0, −1], [1, 0]] ⊕ 0`` (:func:`rotation_generator`).

With the loss ``L(θ) = (1/S) Σ_s ‖Φ_N(x_s) − y_s‖²``, ``Φ_N = (1/N) Σᵢ σ*(·, θᵢ)``, and labels of
a teacher equivariant under the whole group: on a raw training set J ≠ 0; on the set
augmented by its C_K orbit the loss is only C_K-invariant and J = (1/K) Σ_k f'(2πk/K) for
the smooth periodic ``f(φ) = L_raw(e^{φA} θ)``, which keeps only the Fourier modes of f of
order a multiple of K (decaying fast in K); the orbit-averaged loss has J = ∫ f' = 0.

The gradient is taken by autograd through :meth:`Unit.per_particle` in float64, independent
of the engine's closed-form pull-backs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.units import Unit

F64 = torch.float64


def rotation_generator(dim: int) -> np.ndarray:
    """``a = d/dφ g_φ |_{φ=0}`` for the rotation of the first two coordinates of R^dim, (d, d)."""
    if isinstance(dim, bool) or int(dim) != dim or dim < 2:
        raise ValueError(f"a rotation generator needs dim ≥ 2, got {dim!r}")
    a = np.zeros((int(dim), int(dim)))
    a[0, 1], a[1, 0] = -1.0, 1.0
    return a


def uv_generator(unit: Unit) -> np.ndarray:
    """``A = diag(a, a)`` on Z of the ``uv`` unit (its action ``M_g = diag(g, g)`` is linear
    in g, so the generator is the action of a), shape (D, D)."""
    if unit.name != "uv" or unit.dx != unit.dy:
        raise ValueError(f"the rotation generator on Z is built for the uv unit with dx = dy, "
                         f"got the {unit.name} unit R^{unit.dx} → R^{unit.dy}")
    return unit.z_action(rotation_generator(unit.dx), rotation_generator(unit.dy))


def loss_gradient(theta, x, y, unit: Unit) -> tuple[np.ndarray, np.ndarray]:
    """``(L, ∇L)`` of ``L = (1/S) Σ_s ‖Φ_N(x_s) − y_s‖²`` for clouds ``theta (..., N, D)``,
    inputs ``x (S, dx)`` and targets ``y (S, dy)``: shapes (...) and (..., N, D), float64."""
    th = torch.tensor(np.asarray(theta, dtype=np.float64), dtype=F64, requires_grad=True)
    xs = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=F64)
    ys = torch.as_tensor(np.asarray(y, dtype=np.float64), dtype=F64)
    xs = xs.expand(*th.shape[:-2], *xs.shape)
    out = unit.per_particle(th, xs).mean(-2)  # (..., S, dy)
    loss = ((out - ys) ** 2).sum(-1).mean(-1)
    (grad,) = torch.autograd.grad(loss.sum(), th)
    return loss.detach().numpy(), grad.numpy()


def angular_momentum(theta, grad, generator) -> tuple[np.ndarray, np.ndarray]:
    """``J = Σᵢ ⟨A θᵢ, gᵢ⟩`` and its scale ``Σᵢ |A θᵢ| |gᵢ|`` (Cauchy–Schwarz bound), (...)."""
    th, g = np.asarray(theta, dtype=np.float64), np.asarray(grad, dtype=np.float64)
    a_theta = th @ np.asarray(generator, dtype=np.float64).T
    j = (a_theta * g).sum((-1, -2))
    scale = (np.linalg.norm(a_theta, axis=-1) * np.linalg.norm(g, axis=-1)).sum(-1)
    return j, scale
