"""Backend ``compile``: the fused formulas of the one-layer units through ``torch.compile``.

The output ``Φ_N(x_s) = (1/N) Σ_n σ*(x_s, θ̃_n)`` and the force ``F_n = Σ_s J_n(x_s)ᵀ c_s``
are written element-wise over (R, S, N), with feature-major particles ``(R, D, N)``, so
that the compiler (C++ on a CPU, Triton on a GPU) fuses each into one pass over the
particles; the update then follows the formula of :class:`~.eager_kernel.EagerKernel`.
"""

from __future__ import annotations

import torch

from ..core.units import Unit
from .eager_kernel import EagerKernel, UpdateSpec

#: Above this many samples per step the compiled force sums over samples in a loop
#: instead of unrolling them.
UNROLL_MAX_SAMPLES = 64


def fused_output(unit: Unit, tht: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Φ_N from feature-major particles ``tht (R, D, N)`` and ``x (R, S, dx)``: (R, S, dy).

    Written element-wise over (R, S, N) so a compiler fuses it into one reduction.
    """
    act, dx, n = unit.activation.fn, unit.dx, tht.shape[-1]
    xl = [x[:, :, l, None] for l in range(dx)]
    if unit.name == "matrix":
        outs = [
            act(_dot([tht[:, None, k * dx + l, :] for l in range(dx)], xl)).sum(-1) / n
            for k in range(unit.dy)
        ]
    else:
        a = act(_dot([tht[:, None, l, :] for l in range(dx)], xl) / dx)
        outs = [(tht[:, None, dx + k, :] * a).sum(-1) / n for k in range(unit.dy)]
    return torch.stack(outs, -1)


def _dot(us, vs):
    acc = us[0] * vs[0]
    for u, v in zip(us[1:], vs[1:], strict=True):
        acc = acc + u * v
    return acc


def fused_force(unit: Unit, tht: torch.Tensor, x: torch.Tensor, cot: torch.Tensor):
    """Pull-back ``Σ_s J_n(x_s)ᵀ c_s`` in feature-major form ``(R, D, N)``.

    Samples are unrolled (S ≤ UNROLL_MAX_SAMPLES) so every term is a (R, N) element-wise
    expression and the compiled kernel keeps one pass over the particles.
    """
    S = x.shape[1]
    if S > UNROLL_MAX_SAMPLES:
        terms = _force_terms(unit, tht[:, None], x[:, :, :, None], cot[:, :, :, None], 1)
        return torch.stack(terms, 1)
    g = None
    for s in range(S):
        terms = _force_terms(unit, tht, x[:, s, :, None], cot[:, s, :, None], None)
        g = terms if g is None else [a + b for a, b in zip(g, terms, strict=True)]
    if unit.name == "uv":
        g = [t / unit.dx if i < unit.dx else t for i, t in enumerate(g)]
    return torch.stack(g, 1)


def _force_terms(unit, tht, xs, cs, sum_dim):
    """Per-feature force contributions; summed over ``sum_dim`` if given."""
    act, dact, dx, dy = unit.activation.fn, unit.activation.grad, unit.dx, unit.dy

    def red(t):
        return t if sum_dim is None else t.sum(sum_dim)

    def th(i):
        return tht[..., i, :]

    def xv(l):
        return xs[..., l, :]

    def cv(k):
        return cs[..., k, :]

    if unit.name == "matrix":
        g = [None] * (dx * dy)
        for k in range(dy):
            pre = _dot([th(k * dx + l) for l in range(dx)], [xv(l) for l in range(dx)])
            a = act(pre)
            w = dact(pre, a) * cv(k)
            for l in range(dx):
                g[k * dx + l] = red(w * xv(l))
        return g
    h = _dot([th(l) for l in range(dx)], [xv(l) for l in range(dx)]) / dx
    a = act(h)
    vc = _dot([th(dx + k) for k in range(dy)], [cv(k) for k in range(dy)])
    w = dact(h, a) * vc
    g_u = [red(w * xv(l)) for l in range(dx)]
    if sum_dim is not None:
        g_u = [t / dx for t in g_u]
    return g_u + [red(a * cv(k)) for k in range(dy)]


def _project_rows(v, P):
    """Row vectors times P: ``(v P)_d = Σ_e v_e P[e, d]`` for v (R, N, D), P (R, D, D)."""
    D = v.shape[-1]
    return _dot([v[..., e, None] for e in range(D)], [P[:, None, e, :] for e in range(D)])


class CompiledKernel(EagerKernel):
    """``fused_output`` / ``fused_force`` and the update compiled by ``torch.compile``."""

    name = "compile"

    def __init__(self, unit: Unit):
        super().__init__(unit)
        opts = {"dynamic": False, "fullgraph": True}
        self._out = torch.compile(self._output_fn, **opts)
        self._force = torch.compile(self._force_fn, **opts)
        self._step = torch.compile(self._step_fn, **opts)

    def _output_fn(self, tht, x):
        return fused_output(self.unit, tht, x)

    def _force_fn(self, tht, x, cot):
        return fused_force(self.unit, tht, x, cot).transpose(1, 2)

    def _step_fn(self, tht, x, cot, theta, xi, proj, nproj, lr, wd, sigma):
        drift = fused_force(self.unit, tht, x, cot).transpose(1, 2) + wd * theta
        if proj is not None:
            drift = _project_rows(drift, proj)
        if nproj is not None:
            xi = _project_rows(xi, nproj)
        return theta - lr * drift + sigma * xi

    @staticmethod
    def _flat(theta, x):
        lead = theta.shape[:-2]
        th = theta.reshape(-1, *theta.shape[-2:])
        xs = x.expand(*lead, *x.shape[-2:]).reshape(-1, *x.shape[-2:]).contiguous()
        return lead, th, xs

    def output_and_pullback(self, theta, x):
        lead, th, xs = self._flat(theta, x)
        tht = th.transpose(1, 2).contiguous()
        out = self._out(tht, xs)

        def pullback(cot):
            c = cot.expand(*lead, *cot.shape[-2:]).reshape(th.shape[0], -1, cot.shape[-1])
            return self._force(tht, xs, c.contiguous()).reshape(*lead, *th.shape[-2:])

        return out.reshape(*lead, *out.shape[-2:]), pullback

    def forward(self, theta, x, spec: UpdateSpec):
        tht = spec.model_particles(theta).transpose(1, 2).contiguous()
        x = x.contiguous()
        return self._out(tht, x), (tht, x)

    def force(self, ctx, cot):
        tht, x = ctx
        return self._force(tht, x, cot.contiguous())

    def update(self, ctx, cot, theta, xi, spec: UpdateSpec):
        tht, x = ctx
        return self._step(
            tht, x, cot.contiguous(), theta, xi[spec.noise_row], spec.proj, spec.noise_proj,
            spec.lr, spec.wd, spec.sigma,
        )
