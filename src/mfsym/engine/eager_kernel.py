"""The kernel interface and its reference implementation, in plain PyTorch.

One noisy SGD step of a stack of R runs (the three parts of :mod:`mfsym.engine.kernels`):
outputs ``Φ_N(x) (R, S, dy)`` of each run's (projected) model, the loss and cotangent
``c = c₀ (L o − T)`` (:func:`cotangent`), and the update
``θ ← θ − lr · Π_d[F + wd·θ] + σ · Π_n ξ`` with the force ``F_n = Σ_s J_n(x_s)ᵀ c_s``.
:class:`UpdateSpec` holds a stack's constants, :class:`Tally` its loss bookkeeping, and
:class:`EagerKernel` composes the step from the unit's own
:meth:`~mfsym.core.units.Unit.output_and_pullback`: the reference every other backend
agrees with to float rounding, and the base class of the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.units import Unit

F64 = torch.float64


@dataclass
class UpdateSpec:
    """Constants of a stack's update (see the module docstring).

    proj: (R, D, D) model/drift projectors or None when no run projects; proj_on: (R,) bool;
    noise_proj: (R, D, D) noise projectors or None; noise_on: (R,) bool; noise_row: (R,)
    long, the row of the noise tensor each run reads (its seed); views: m, the views per
    sample; c0, cot_l (R, m·dy, m·dy) or None (L = I for all) and cot_on (R,) bool: the
    cotangent ``c₀ (L o − T)`` (L = I where cot_on is false).
    """

    lr: float
    wd: float
    sigma: float
    proj: torch.Tensor | None
    proj_on: torch.Tensor
    noise_proj: torch.Tensor | None
    noise_on: torch.Tensor
    noise_row: torch.Tensor
    views: int = 1
    c0: float = 1.0
    cot_l: torch.Tensor | None = None
    cot_on: torch.Tensor | None = None
    cache: dict = field(default_factory=dict, repr=False)

    def model_particles(self, theta: torch.Tensor) -> torch.Tensor:
        """θ̃ = θ Pᵀ for every run (identity rows leave θ unchanged exactly)."""
        return theta if self.proj is None else theta @ self.proj.transpose(1, 2)


@dataclass
class Tally:
    """Per-run loss bookkeeping of a step loop: ``loss_acc`` (R,) float64 sums the minibatch
    losses, ``first_bad`` (R,) int64 holds the first ``step`` whose loss was not finite
    (−1 while none).  Both are updated in place."""

    loss_acc: torch.Tensor
    first_bad: torch.Tensor
    step: int = 0

    def add(self, loss: torch.Tensor) -> None:
        self.loss_acc.add_(loss)
        self.first_bad.masked_fill_(~torch.isfinite(loss) & (self.first_bad < 0), self.step)


def cotangent(out: torch.Tensor, targets: torch.Tensor, spec: UpdateSpec):
    """Loss (R,) and cotangent ``c_s = c₀ e_s``, ``e_s = L o_b − T_s``, for outputs and
    targets ``(R, m·B, dy)`` (view-major).

    The loss is ``Σ_s ‖e_s‖² / (mB)``: the residual loss, and for FA (orthogonal g, so
    ``‖(L o − T)_{g,b}‖ = ‖Φ̂(x_b) − y_b‖``) the loss ``Σ_b ‖Φ̂(x_b) − y_b‖² / B``.
    """
    R, S, dy = out.shape
    if spec.cot_l is None:
        e = out - targets
    else:
        m = spec.views
        B = S // m
        o = out.reshape(R, m, B, dy).transpose(1, 2).reshape(R, B, m * dy)
        lo = (spec.cot_l[:, None] * o[:, :, None, :]).sum(-1)
        lo = lo.reshape(R, B, m, dy).transpose(1, 2).reshape(R, S, dy)
        e = torch.where(spec.cot_on[:, None, None], lo, out) - targets
    loss = (e * e).to(F64).sum(-1).sum(-1) / S
    return loss, spec.c0 * e


class EagerKernel:
    """The unit's PyTorch implementation; the update composed of tensor operations."""

    name = "eager"
    #: whether :meth:`gate` gives a gate for :meth:`advance_many` (threads that join late)
    late_join = False

    def __init__(self, unit: Unit):
        self.unit = unit

    def output_and_pullback(self, theta, x):
        return self.unit.output_and_pullback(theta, x)

    def forward(self, theta, x, spec: UpdateSpec):
        out, pullback = self.unit.output_and_pullback(spec.model_particles(theta), x)
        return out, pullback

    def force(self, ctx, cot):
        return ctx(cot)

    def update(self, ctx, cot, theta, xi, spec: UpdateSpec):
        """New particles from the force ``ctx(cot)`` and noise rows ``xi (n_seeds, N, D)``."""
        drift = self.force(ctx, cot) + spec.wd * theta
        if spec.proj is not None:
            drift = drift @ spec.proj
        noise = xi[spec.noise_row]
        if spec.noise_proj is not None:
            noise = noise @ spec.noise_proj
        return theta - spec.lr * drift + spec.sigma * noise

    def output(self, theta, x, spec: UpdateSpec):
        """Φ_N of each run's model, (R, S, dy)."""
        return self.forward(theta, x, spec)[0]

    def advance(self, theta, x, targets, xi, spec: UpdateSpec, tally: Tally):
        """One step: outputs, loss and cotangent against ``targets``, update; the loss goes
        to ``tally``.  Returns the new particles."""
        out, ctx = self.forward(theta, x, spec)
        loss, cot = cotangent(out, targets, spec)
        tally.add(loss)
        return self.update(ctx, cot, theta, xi, spec)

    def advance_many(self, theta, x, targets, xi, spec: UpdateSpec, tally: Tally, step0: int,
                     gate=None):
        """K steps: ``x (K, R, S, dx)``, ``targets (K, R, S, dy)``, ``xi (n_seeds, K, N, D)``;
        step k is :meth:`advance` at global step ``step0 + k``.  Returns the new particles.
        ``gate`` is for kernels with ``late_join`` (here it must be None)."""
        if gate is not None:
            raise ValueError(f"backend {self.name} takes no gate")
        for k in range(x.shape[0]):
            tally.step = step0 + k
            theta = self.advance(theta, x[k], targets[k], xi[:, k], spec, tally)
        return theta
