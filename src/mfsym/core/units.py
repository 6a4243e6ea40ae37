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
which holds for permutation matrices g_y, for signed permutation matrices (a permutation
times a diagonal of ±1) when act is odd (tanh, linear), and for every g_y when act is linear.

``uv``: ``z = (u, v) ∈ R^dx × R^dy``, ``σ*(x, z) = v · act(uᵀx / dx)``; action
``M_g(u, v) = (g_x u, g_y v)``, equivariant for every orthogonal representation.  With a
positively 1-homogeneous act (relu, leaky_relu, linear) it has the rescaling symmetry
``(u, v) → (c u, v / c)``, c > 0, whose Noether charge is ``|v|² − |u|²``.

``mlp`` (PAPER.md §10, a multi-layer unit): ``z = (W₁ ∈ R^{h×dx}, W₂ ∈ R^{dy×h})``, both
flattened row-major and concatenated (D = h·dx + dy·h), ``σ*(x, z) = W₂ act(W₁ x)``.  G acts
on the hidden layer by a permutation representation ρ (element-wise act commutes with
permutations): ``M_g(W₁, W₂) = (ρ(g) W₁ g_xᵀ, g_y W₂ ρ(g)ᵀ)``, i.e. ``ρ ⊗ g_x`` on vec(W₁)
and ``g_y ⊗ ρ`` on vec(W₂); then ``σ*(g x, M_g z) = g_y W₂ ρᵀρ act(W₁ x) = g σ*(x, z)``.

Input VJPs.  A deep model built of units (the mean-ODE ResNet of ``mfsym.engine.models``)
also needs the cotangent of the *input*: :meth:`Unit.output_and_vjp` returns, besides the
pull-back on the particles, ``vjp_x(c)_s = (1/N) Σ_n (∂σ*(x_s, θ_n)/∂x_s)ᵀ c_s`` of shape
(..., S, dx), the gradient of ``Σ_s c_s · Φ_N(x_s)`` with respect to ``x_s``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .groups import FiniteGroup, GroupXY

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "linear")
#: One-layer units (the paper's grid and the Noether studies use these).
UNITS = ("matrix", "uv")
#: Multi-layer units (PAPER.md §10).
DEEP_UNITS = ("mlp",)
ALL_UNITS = UNITS + DEEP_UNITS
#: How G acts on the hidden layer of the mlp unit: ρ = I_k ⊗ g_x ("input", needs a
#: permutation action on X and h a multiple of dx), I_k ⊗ the left regular representation
#: ("regular", h a multiple of |G|), or the identity ("trivial").
HIDDEN_REPRESENTATIONS = ("input", "regular", "trivial")


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
    odd: bool = False  # act(−h) = −act(h)


def make_activation(name: str, leaky_slope: float = 0.1) -> Activation:
    """Activation by name; raises ``ValueError`` naming the allowed values."""
    if name == "sigmoid":
        return Activation(name, torch.sigmoid, lambda h, a: a * (1.0 - a), False)
    if name == "tanh":
        return Activation(name, torch.tanh, lambda h, a: 1.0 - a * a, False, odd=True)
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
        return Activation(name, lambda h: h, lambda h, a: torch.ones_like(h), True, odd=True)
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

    @property
    def z_key(self) -> tuple:
        """What determines this unit's action on Z: (name, dx, dy) and, for the mlp unit,
        its hidden width and representation.  A :class:`FiniteGroup` records the key of the
        unit it was built for and refuses any other (:meth:`FiniteGroup.check_unit`)."""
        return (self.name, self.dx, self.dy)

    def group(self, gxy: GroupXY) -> FiniteGroup:
        """The full group (actions on X, Y and this unit's Z) for a group on X and Y.

        The compatibility of the unit with the action on Y is checked on the generators
        when ``gxy`` records them (an error then names the generator), else on every
        element."""
        gx, gy = np.asarray(gxy.x), np.asarray(gxy.y)
        if gx.shape[1:] != (self.dx, self.dx) or gy.shape[1:] != (self.dy, self.dy):
            raise ValueError(
                f"group {gxy.name!r} acts on R^{gx.shape[1]} → R^{gy.shape[1]}, but the "
                f"{self.name} unit maps R^{self.dx} → R^{self.dy}"
            )
        gens = tuple(getattr(gxy, "generators", ()))
        if gens:
            self._check_compatible(gy[list(gens)], gxy.name, "generator")
        self._check_compatible(gy, gxy.name)
        return FiniteGroup(gxy.name, gx, gy, self.z_actions(gxy), generators=gens,
                           built_for=self.z_key)

    def z_actions(self, gxy: GroupXY) -> np.ndarray:
        """M_g for every element of ``gxy``, shape (|G|, D, D)."""
        return np.stack([self.z_action(a, b) for a, b in zip(gxy.x, gxy.y, strict=True)])

    def _check_compatible(self, gy: np.ndarray, name: str, what: str = "element") -> None:
        """Hook for units whose equivariance needs more than orthogonality; an error names
        the first failing ``what`` ("element" or "generator") by its index in ``gy``."""

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

    def output_and_vjp(self, theta: torch.Tensor, x: torch.Tensor):
        """Return ``(Φ_N(x), vjp)`` with ``vjp(c) = (pullback(c), vjp_x(c))``.

        ``pullback(c)`` (..., N, D) as in :meth:`output_and_pullback`; ``vjp_x(c)``
        (..., S, dx) the input cotangent of the module docstring.  Closed form, no autograd.
        """
        raise NotImplementedError  # pragma: no cover


def _is_permutation(mats: np.ndarray) -> np.ndarray:
    """Per matrix of a stack (k, d, d): True iff it is a permutation matrix."""
    binary = np.all(np.isclose(mats, 0) | np.isclose(mats, 1), axis=(1, 2))
    return binary & np.all(np.isclose(mats.sum(axis=1), 1), axis=1)


def _is_signed_permutation(mats: np.ndarray) -> np.ndarray:
    """Per matrix of a stack (k, d, d): True iff |M| (entry-wise) is a permutation matrix."""
    return _is_permutation(np.abs(mats))


@dataclass(frozen=True)
class MatrixUnit(Unit):
    """σ*(x, z) = act(z x), z ∈ R^{dy×dx} (flattened row-major, D = dy·dx)."""

    @property
    def dim_z(self) -> int:
        return self.dx * self.dy

    def z_action(self, gx, gy):
        # vec_row(g_y z g_xᵀ) = (g_y ⊗ g_x) vec_row(z)
        return np.kron(gy, gx)

    def _check_compatible(self, gy, name, what="element"):
        act = self.activation
        if act.name == "linear":
            return
        ok = _is_signed_permutation(gy) if act.odd else _is_permutation(gy)
        if not np.all(ok):
            k = int(np.argmin(ok))
            allowed = ("signed permutation matrices (odd activation)" if act.odd
                       else "permutation matrices")
            raise ValueError(
                f"the matrix unit with element-wise {act.name!r} is equivariant only when G "
                f"acts on Y by {allowed}; {what} {k} of group {name!r} acts on Y by "
                f"{np.round(gy[k], 6).tolist()}, which is not one (use the 'uv' unit, an odd "
                f"activation such as 'tanh' for sign changes, or the 'linear' activation)"
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

    def output_and_vjp(self, theta, x):
        pre = self._pre(theta, x)
        act = self.activation.fn(pre)
        z = theta.reshape(*theta.shape[:-1], self.dy, self.dx)

        def vjp(cot):
            w = self.activation.grad(pre, act) * cot.unsqueeze(-2)  # (..., S, N, dy)
            g = torch.einsum("...snk,...sl->...nkl", w, x)
            g_x = torch.einsum("...snk,...nkl->...sl", w, z) / theta.shape[-2]
            return g.reshape(*g.shape[:-2], self.dim_z), g_x

        return act.mean(dim=-2), vjp


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

    def output_and_vjp(self, theta, x):
        h, v = self._hidden(theta, x)
        a = self.activation.fn(h)
        u, n = self.split(theta)[0], theta.shape[-2]
        out = torch.einsum("...sn,...nk->...sk", a, v) / n

        def vjp(cot):
            g_v = torch.einsum("...sn,...sk->...nk", a, cot)
            w = self.activation.grad(h, a) * torch.einsum("...nk,...sk->...sn", v, cot)
            g_u = torch.einsum("...sn,...sl->...nl", w, x) / self.dx
            g_x = torch.einsum("...sn,...nl->...sl", w, u) / (self.dx * n)
            return torch.cat([g_u, g_v], dim=-1), g_x

        return out, vjp


def regular_representation(gxy: GroupXY) -> np.ndarray:
    """Left regular representation ``(|G|, |G|, |G|)`` of a group given on X and Y:
    ``L(g_i)[k, j] = 1`` iff ``g_k = g_i g_j`` (products of the joint (g_x, g_y) matrices).

    Raises ``ValueError`` when the (X, Y) action is not faithful or not closed.
    """
    joint = [np.concatenate([a.ravel(), b.ravel()]) for a, b in zip(gxy.x, gxy.y, strict=True)]
    flat = np.stack(joint)
    order = flat.shape[0]
    if order > 1 and np.min(np.abs(flat[:, None] - flat[None]).max(-1)
                            + 2.0 * np.eye(order)) < 1e-9:
        raise ValueError(f"group {gxy.name!r}: the action on X and Y is not faithful, so its "
                         "elements cannot index a regular representation")
    out = np.zeros((order, order, order))
    for i, j in np.ndindex(order, order):
        prod = np.concatenate([(gxy.x[i] @ gxy.x[j]).ravel(), (gxy.y[i] @ gxy.y[j]).ravel()])
        err = np.abs(flat - prod).max(-1)
        k = int(np.argmin(err))
        if err[k] > 1e-9:
            raise ValueError(f"group {gxy.name!r} is not closed: g_{i} g_{j} is not an element")
        out[i, k, j] = 1.0
    return out


@dataclass(frozen=True)
class MLPUnit(Unit):
    """σ*(x, z) = W₂ act(W₁ x), z = (vec W₁, vec W₂), W₁ (h, dx), W₂ (dy, h); D = h(dx + dy).

    ``representation`` names the hidden permutation representation ρ (module docstring,
    :data:`HIDDEN_REPRESENTATIONS`).
    """

    hidden: int = 2
    representation: str = "input"

    @property
    def dim_z(self) -> int:
        return self.hidden * (self.dx + self.dy)

    @property
    def z_key(self) -> tuple:
        return (self.name, self.dx, self.dy, f"hidden {self.hidden}", self.representation)

    def split(self, theta):
        """(W₁, W₂) views: shapes (..., N, h, dx) and (..., N, dy, h)."""
        k = self.hidden * self.dx
        lead = theta.shape[:-1]
        return (theta[..., :k].reshape(*lead, self.hidden, self.dx),
                theta[..., k:].reshape(*lead, self.dy, self.hidden))

    def hidden_action(self, gxy: GroupXY) -> np.ndarray:
        """ρ(g) for every element, ``(|G|, h, h)``; a clear ``ValueError`` if h does not fit."""
        gx, h = np.asarray(gxy.x), self.hidden
        if self.representation == "trivial":
            return np.broadcast_to(np.eye(h), (gx.shape[0], h, h)).copy()
        if self.representation == "input":
            if not np.all(_is_permutation(gx)):
                raise ValueError(
                    f"mlp representation 'input' needs a permutation action on X; group "
                    f"{gxy.name!r} has another element (use 'regular' or 'trivial')")
            base = gx
        else:
            base = regular_representation(gxy)
        if h % base.shape[1]:
            raise ValueError(
                f"mlp hidden width {h} must be a multiple of {base.shape[1]} for "
                f"representation {self.representation!r} of group {gxy.name!r}")
        return np.stack([np.kron(np.eye(h // base.shape[1]), b) for b in base])

    def z_action(self, gx, gy, rho=None):
        rho = np.eye(self.hidden) if rho is None else rho
        k = self.hidden * self.dx
        out = np.zeros((self.dim_z, self.dim_z))
        out[:k, :k] = np.kron(rho, gx)  # vec_row(ρ W₁ g_xᵀ)
        out[k:, k:] = np.kron(gy, rho)  # vec_row(g_y W₂ ρᵀ)
        return out

    def z_actions(self, gxy: GroupXY) -> np.ndarray:
        rho = self.hidden_action(gxy)
        return np.stack([self.z_action(a, b, r) for a, b, r in zip(gxy.x, gxy.y, rho,
                                                                    strict=True)])

    def _hidden(self, theta, x):
        _check_shapes(self, theta, x)
        w1, w2 = self.split(theta)
        pre = torch.einsum("...nhl,...sl->...snh", w1, x)
        return pre, self.activation.fn(pre), w1, w2

    def per_particle(self, theta, x):
        _, a, _, w2 = self._hidden(theta, x)
        return torch.einsum("...nkh,...snh->...snk", w2, a)

    def output_and_vjp(self, theta, x):
        pre, a, w1, w2 = self._hidden(theta, x)
        n = theta.shape[-2]
        out = torch.einsum("...nkh,...snh->...sk", w2, a) / n

        def vjp(cot):
            g_w2 = torch.einsum("...sk,...snh->...nkh", cot, a)
            w = self.activation.grad(pre, a) * torch.einsum("...nkh,...sk->...snh", w2, cot)
            g_w1 = torch.einsum("...snh,...sl->...nhl", w, x)
            g_x = torch.einsum("...snh,...nhl->...sl", w, w1) / n
            lead = g_w1.shape[:-2]
            return torch.cat([g_w1.reshape(*lead, -1), g_w2.reshape(*lead, -1)], -1), g_x

        return out, vjp

    def output_and_pullback(self, theta, x):
        out, vjp = self.output_and_vjp(theta, x)
        return out, lambda cot: vjp(cot)[0]


#: the widest input, output or hidden layer a unit takes: the group's action on Z is a
#: dense (D, D) matrix per element, so a unit much wider would not fit in memory
MAX_WIDTH = 4096


def _is_count(value) -> bool:
    """Whether ``value`` is a whole number in 1 … MAX_WIDTH (an integer, or an integral
    finite float)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and int(value) == value and 1 <= value <= MAX_WIDTH


def make_unit(
    name: str, dx: int = 2, dy: int = 2, activation: str = "sigmoid", leaky_slope: float = 0.1,
    hidden: int | None = None, representation: str = "input",
) -> Unit:
    """Unit by name; raises ``ValueError`` naming the bad value and the allowed ones.

    ``hidden`` (default dx) and ``representation`` apply to the ``mlp`` unit only.
    """
    for key, val in (("dx", dx), ("dy", dy)):
        if not _is_count(val):
            raise ValueError(f"{key} must be a positive integer ≤ {MAX_WIDTH}, got {val!r}")
    act = make_activation(activation, leaky_slope)
    if name == "matrix":
        return MatrixUnit("matrix", int(dx), int(dy), act)
    if name == "uv":
        return UVUnit("uv", int(dx), int(dy), act)
    if name == "mlp":
        hidden = int(dx) if hidden is None else hidden
        if not _is_count(hidden):
            raise ValueError(f"mlp hidden width must be a positive integer ≤ {MAX_WIDTH}, "
                             f"got {hidden!r}")
        if representation not in HIDDEN_REPRESENTATIONS:
            raise ValueError(f"unknown mlp representation {representation!r}; allowed: "
                             f"{list(HIDDEN_REPRESENTATIONS)}")
        return MLPUnit("mlp", int(dx), int(dy), act, int(hidden), representation)
    raise ValueError(f"unknown unit {name!r}; allowed: {list(ALL_UNITS)}")
