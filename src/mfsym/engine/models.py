"""Model types of the engine: the one-layer ensemble of units and the mean-ODE ResNet.

The engine (:mod:`mfsym.engine.training`) trains a *model*: anything with the interface of a
:class:`~mfsym.core.units.Unit` that matters to a step, namely ``dx``, ``dy``, ``dim_z``,
``activation``, ``name`` and ``output_and_pullback(theta, x)``.  A unit is itself the
one-layer model ``Φ_N(x) = (1/N) Σᵢ σ*(x, θᵢ)``.

Mean-ODE ResNet (PAPER.md §10).  Depth L, M particles per layer, N = L·M particles stored
layer-major as ``theta (..., L·M, D)`` (particle ``(l, i)`` at row ``l·M + i``):

    h₀ = x,   h_l = h_{l−1} + (1/(L·M)) Σᵢ σ*(h_{l−1}, z_{l,i}),   Φ(x) = h_L.

It needs X = Y (dx = dy).  The engine's update divides by N = L·M and its force is N times
the gradient of the loss, so the ResNet's "pull-back" of an output cotangent c (the role
played by ``Σ_s J_n(x_s)ᵀ c_s`` for a unit) is

    F_{l,i} = L·M · ∂(Σ_s c_s · Φ(x_s)) / ∂z_{l,i} = Σ_s J_z σ*(h_{l−1,s}, z_{l,i})ᵀ δ_{l,s},

with the back-propagated cotangents ``δ_L = c`` and
``δ_{l−1} = δ_l + (1/L) · (1/M) Σᵢ J_x σ*(h_{l−1}, z_{l,i})ᵀ δ_l`` — each layer's unit
pull-back and input VJP (:meth:`Unit.output_and_vjp`), in closed form.  With N replaced by
L·M, the engine's step α/N, noise √(2αβ/N), N·T steps, DA views, FA averaging, EA
projection and SI noise projection apply unchanged; the model is equivariant,
``Φ(g x; M_g θ) = g Φ(x; θ)``, when G acts alike on X and Y (each residual layer is).
:meth:`ResNet.output_and_pullback` is the eager reference; on a CPU the ResNet of the
matrix or mlp unit trains on a fused C step (``csrc/mfsym_deep.c``,
:class:`mfsym.engine.kernels.DeepNativeKernel`) that computes the same formulas.

Output-scaled ensemble (PAPER.md §9b, item 4).  ``Φ(x) = c · (1/N) Σᵢ σ*(x, θᵢ)``; with
``c = √N`` it is the NTK network ``(1/√N) Σᵢ σ*``.  Its force is ``c`` times the unit's
pull-back, i.e. N times the gradient of the loss as the engine expects, so the engine's step
``−(α/N) F = −α ∇L`` is plain gradient descent with step α on this network: α independent of
N is the NTK scaling.  Teachers stay unscaled clouds (``model_output`` averages them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.units import Unit


class _BuiltOnUnit:
    """A model built of ``self.unit``: its sizes and activation are the unit's."""

    @property
    def dx(self) -> int:
        return self.unit.dx

    @property
    def dy(self) -> int:
        return self.unit.dy

    @property
    def dim_z(self) -> int:
        return self.unit.dim_z

    @property
    def activation(self):
        return self.unit.activation


@dataclass(frozen=True)
class ResNet(_BuiltOnUnit):
    """The mean-ODE ResNet of depth ``depth`` built of ``unit`` (see the module docstring)."""

    unit: Unit
    depth: int
    name: str = "resnet"

    def __post_init__(self):
        if isinstance(self.depth, bool) or int(self.depth) != self.depth or self.depth < 1:
            raise ValueError(f"ResNet depth must be an integer ≥ 1, got {self.depth!r}")
        if self.unit.dx != self.unit.dy:
            raise ValueError(
                f"a ResNet needs a unit mapping R^d → R^d, got {self.unit.name} unit "
                f"R^{self.unit.dx} → R^{self.unit.dy}"
            )

    def per_layer(self, n_particles: int) -> int:
        """M = N / L; raises ``ValueError`` naming N and L when L does not divide N."""
        if n_particles % self.depth:
            raise ValueError(
                f"a ResNet of depth L={self.depth} needs a particle count divisible by L, "
                f"got {n_particles}"
            )
        return n_particles // self.depth

    def layers(self, theta: torch.Tensor) -> torch.Tensor:
        """``(..., L·M, D)`` → ``(..., L, M, D)`` (a view)."""
        m = self.per_layer(theta.shape[-2])
        return theta.reshape(*theta.shape[:-2], self.depth, m, theta.shape[-1])

    def _forward(self, theta, x):
        z, h, vjps = self.layers(theta), x, []
        for layer in range(self.depth):
            out, vjp = self.unit.output_and_vjp(z[..., layer, :, :], h)
            vjps.append(vjp)
            h = h + out / self.depth
        return h, vjps

    def output(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Φ(x_s) = h_L, shape (..., S, d)."""
        return self._forward(theta, x)[0]

    def output_and_pullback(self, theta: torch.Tensor, x: torch.Tensor):
        """``(Φ(x), pullback)``: ``pullback(c)`` (..., L·M, D) is the force F of the module
        docstring for output cotangents ``c`` (..., S, d)."""
        out, vjps = self._forward(theta, x)

        def pullback(cot):
            forces, delta = [None] * self.depth, cot
            for layer in reversed(range(self.depth)):
                forces[layer], g_x = vjps[layer](delta)
                delta = delta + g_x / self.depth
            return torch.cat(forces, dim=-2)

        return out, pullback


@dataclass(frozen=True)
class OutputScaled(_BuiltOnUnit):
    """The ensemble of ``unit`` with its output multiplied by ``scale`` (module docstring)."""

    unit: Unit
    scale: float
    name: str = "scaled"

    def __post_init__(self):
        if not (isinstance(self.scale, int | float) and np.isfinite(self.scale)
                and self.scale > 0):
            raise ValueError(f"output scale must be a finite number > 0, got {self.scale!r}")

    def per_particle(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The unit's σ*(x_s, θ_n), unscaled (teacher clouds are averaged with it)."""
        return self.unit.per_particle(theta, x)

    def output(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``c · Φ_N(x)``, shape (..., S, dy)."""
        return self.scale * self.unit.output(theta, x)

    def output_and_pullback(self, theta: torch.Tensor, x: torch.Tensor):
        """``(c Φ_N(x), c · unit pull-back)``."""
        out, pullback = self.unit.output_and_pullback(theta, x)
        return self.scale * out, lambda cot: self.scale * pullback(cot)


def model_output(model, cloud: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The model with particles ``cloud`` (..., K, D) on inputs ``x`` (..., S, dx): (..., S, dy).

    For a unit: ``mean_k σ*(x, t_k)`` (the per-particle outputs averaged, as teachers are
    evaluated); for a ResNet its map with ``cloud`` read as K/L particles per layer.
    """
    if isinstance(model, ResNet):
        return model.output(cloud, x)
    return model.per_particle(cloud, x).mean(-2)


def repeat_layers(particles: np.ndarray, depth: int) -> np.ndarray:
    """A teacher cloud ``(K, D)`` repeated at every layer: ``(L·K, D)``, layer-major."""
    return np.tile(np.asarray(particles), (int(depth), 1))
