"""Units σ*(x, z): the single-particle maps whose average is the network.

A network of N particles θ₁..θ_N ∈ Z = R^D has output ``Φ_N(x) = (1/N) Σᵢ σ*(x, θᵢ)``.

Shapes (all functions broadcast over any leading "run" axes ``...``):

* particles ``theta``: ``(..., N, D)``
* inputs ``x``: ``(..., S, dx)`` (S samples)
* per-particle outputs: ``(..., S, N, dy)``
* network output ``Φ_N``: ``(..., S, dy)``
* output cotangent ``c`` (∂loss/∂Φ per sample): ``(..., S, dy)``
* pull-back ``Σ_s J_n(x_s)ᵀ c_s`` with ``J_n(x) = ∂σ*(x, θ_n)/∂θ_n``: ``(..., N, D)``

Two units:

``matrix`` (the paper's): ``Z = R^{dy×dx}`` flattened row-major, ``σ*(x, z) = act(z x)``
element-wise; group action ``M_g z = g_y z g_xᵀ``, i.e. ``M_g = g_y ⊗ g_x`` on vec(z).
Joint equivariance ``σ*(g x, M_g z) = g σ*(x, z)`` needs ``act(g_y v) = g_y act(v)``,
which holds for permutation matrices g_y (or a linear act).

``uv``: ``z = (u, v) ∈ R^dx × R^dy``, ``σ*(x, z) = v · act(uᵀx / dx)``; action
``M_g(u, v) = (g_x u, g_y v)``, equivariant for every orthogonal representation.  With a
positively 1-homogeneous act (relu, leaky_relu, linear) it has the rescaling symmetry
``(u, v) → (c u, v / c)``, c > 0, whose Noether charge is ``|v|² − |u|²``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .groups import FiniteGroup, GroupXY

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "linear")
UNITS = ("matrix", "uv")


@dataclass(frozen=True)
class Activation:
    """An element-wise activation and its derivative.

    ``grad(h, a)`` returns act'(h) given the pre-activation h and the value a = act(h)
    (sigmoid and tanh reuse a: ``a(1 − a)`` and ``1 − a²``).
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    homogeneous: bool  # positively 1-homogeneous: act(c h) = c act(h) for c > 0


def make_activation(name: str, leaky_slope: float = 0.1) -> Activation:
    """Activation by name; raises ``ValueError`` naming the allowed values."""
    if name == "sigmoid":
        return Activation(name, torch.sigmoid, lambda h, a: a * (1.0 - a), False)
    if name == "tanh":
        return Activation(name, torch.tanh, lambda h, a: 1.0 - a * a, False)
    if name == "relu":
        return Activation(name, torch.relu, lambda h, a: (h > 0).to(h.dtype), True)
    if name == "leaky_relu":
        if not leaky_slope > 0:
            raise ValueError(f"leaky_slope must be > 0, got {leaky_slope!r}")
        slope = float(leaky_slope)
        return Activation(
            name,
            lambda h: torch.nn.functional.leaky_relu(h, slope),
            lambda h, a: torch.where(h > 0, h.new_tensor(1.0), h.new_tensor(slope)),
            True,
        )
    if name == "linear":
        return Activation(name, lambda h: h, lambda h, a: torch.ones_like(h), True)
    raise ValueError(f"unknown activation {name!r}; allowed: {list(ACTIVATIONS)}")


def _check_shapes(unit: Unit, theta: torch.Tensor, x: torch.Tensor) -> None:
    if theta.dim() < 2 or x.dim() < 2:
        raise ValueError(
            f"{unit.name} unit expects particles (..., N, D) and inputs (..., S, dx), got "
            f"shapes {tuple(theta.shape)} and {tuple(x.shape)}"
        )
    if theta.shape[-1] != unit.dim_z:
        raise ValueError(
            f"{unit.name} unit expects particles of size D={unit.dim_z} in the last axis, "
            f"got shape {tuple(theta.shape)}"
        )
    if x.shape[-1] != unit.dx:
        raise ValueError(
            f"{unit.name} unit expects inputs of size dx={unit.dx} in the last axis, "
            f"got shape {tuple(x.shape)}"
        )


@dataclass(frozen=True)
class Unit:
    """Base class: see the module docstring for the shape conventions."""

    name: str
    dx: int
    dy: int
    activation: Activation

    @property
    def dim_z(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def z_action(self, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def group(self, gxy: GroupXY) -> FiniteGroup:
        """The full group (actions on X, Y and this unit's Z) for a group on X and Y."""
        gx, gy = np.asarray(gxy.x), np.asarray(gxy.y)
        if gx.shape[1:] != (self.dx, self.dx) or gy.shape[1:] != (self.dy, self.dy):
            raise ValueError(
                f"group {gxy.name!r} acts on R^{gx.shape[1]} → R^{gy.shape[1]}, but the "
                f"{self.name} unit maps R^{self.dx} → R^{self.dy}"
            )
        self._check_compatible(gy, gxy.name)
        z = np.stack([self.z_action(a, b) for a, b in zip(gx, gy, strict=True)])
        return FiniteGroup(gxy.name, gx, gy, z)

    def _check_compatible(self, gy: np.ndarray, name: str) -> None:
        """Hook for units whose equivariance needs more than orthogonality."""

    def per_particle(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """σ*(x_s, θ_n), shape (..., S, N, dy)."""
        raise NotImplementedError  # pragma: no cover

    def output(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Φ_N(x_s) = mean_n σ*(x_s, θ_n), shape (..., S, dy)."""
        return self.output_and_pullback(theta, x)[0]

    def output_and_pullback(self, theta: torch.Tensor, x: torch.Tensor):
        """Return ``(Φ_N(x), pullback)`` with ``pullback(c) = Σ_s J_n(x_s)ᵀ c_s``.

        ``c`` has shape (..., S, dy) and the result (..., N, D); the pull-back reuses the
        activations computed for the output (no second evaluation of act).
        """
        raise NotImplementedError  # pragma: no cover


@dataclass(frozen=True)
class MatrixUnit(Unit):
    """σ*(x, z) = act(z x), z ∈ R^{dy×dx} (flattened row-major, D = dy·dx)."""

    @property
    def dim_z(self) -> int:
        return self.dx * self.dy

    def z_action(self, gx, gy):
        # vec_row(g_y z g_xᵀ) = (g_y ⊗ g_x) vec_row(z)
        return np.kron(gy, gx)

    def _check_compatible(self, gy, name):
        if self.activation.name == "linear":
            return
        is_perm = np.all(np.isclose(gy, 0) | np.isclose(gy, 1), axis=(1, 2)) & np.all(
            np.isclose(gy.sum(axis=1), 1), axis=1
        )
        if not np.all(is_perm):
            raise ValueError(
                f"the matrix unit with element-wise {self.activation.name!r} is equivariant "
                f"only for permutation actions on Y; group {name!r} has a non-permutation "
                f"element (use the 'uv' unit or the 'linear' activation)"
            )

    def _pre(self, theta, x):
        _check_shapes(self, theta, x)
        z = theta.reshape(*theta.shape[:-1], self.dy, self.dx)
        return torch.einsum("...nkl,...sl->...snk", z, x)

    def per_particle(self, theta, x):
        return self.activation.fn(self._pre(theta, x))

    def output_and_pullback(self, theta, x):
        pre = self._pre(theta, x)
        act = self.activation.fn(pre)
        out = act.mean(dim=-2)

        def pullback(cot):
            w = self.activation.grad(pre, act) * cot.unsqueeze(-2)
            g = torch.einsum("...snk,...sl->...nkl", w, x)
            return g.reshape(*g.shape[:-2], self.dim_z)

        return out, pullback


@dataclass(frozen=True)
class UVUnit(Unit):
    """σ*(x, (u, v)) = v · act(uᵀx / dx), z = (u, v) ∈ R^{dx + dy}."""

    @property
    def dim_z(self) -> int:
        return self.dx + self.dy

    def z_action(self, gx, gy):
        out = np.zeros((self.dim_z, self.dim_z))
        out[: self.dx, : self.dx] = gx
        out[self.dx :, self.dx :] = gy
        return out

    def split(self, theta):
        """(u, v) views of particles: shapes (..., N, dx) and (..., N, dy)."""
        return theta[..., : self.dx], theta[..., self.dx :]

    def _hidden(self, theta, x):
        _check_shapes(self, theta, x)
        u, v = self.split(theta)
        return torch.einsum("...nl,...sl->...sn", u, x) / self.dx, v

    def per_particle(self, theta, x):
        h, v = self._hidden(theta, x)
        return self.activation.fn(h).unsqueeze(-1) * v.unsqueeze(-3)

    def output_and_pullback(self, theta, x):
        h, v = self._hidden(theta, x)
        a = self.activation.fn(h)
        n = theta.shape[-2]
        out = torch.einsum("...sn,...nk->...sk", a, v) / n

        def pullback(cot):
            g_v = torch.einsum("...sn,...sk->...nk", a, cot)
            w = self.activation.grad(h, a) * torch.einsum("...nk,...sk->...sn", v, cot)
            g_u = torch.einsum("...sn,...sl->...nl", w, x) / self.dx
            return torch.cat([g_u, g_v], dim=-1)

        return out, pullback


def make_unit(
    name: str, dx: int = 2, dy: int = 2, activation: str = "sigmoid", leaky_slope: float = 0.1
) -> Unit:
    """Unit by name; raises ``ValueError`` naming the bad value and the allowed ones."""
    for key, val in (("dx", dx), ("dy", dy)):
        if int(val) != val or val < 1:
            raise ValueError(f"{key} must be a positive integer, got {val!r}")
    act = make_activation(activation, leaky_slope)
    if name == "matrix":
        return MatrixUnit("matrix", int(dx), int(dy), act)
    if name == "uv":
        return UVUnit("uv", int(dx), int(dy), act)
    raise ValueError(f"unknown unit {name!r}; allowed: {list(UNITS)}")
