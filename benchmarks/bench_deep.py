"""Speed of the engine's deep models (PAPER.md §10) against plain batched PyTorch steps.

Unit of measure: nanoseconds per particle-sample-layer update, the wall time of one step
divided by runs × L·M × B (each of the L·M particles sits in one layer and is updated from
B samples; for the one-layer mlp ensemble L = 1, M = N).  Vanilla scheme, C₂, SI start,
float32 (``--dtype float64`` for all three implementations).

Mean-ODE ResNet of the 2×2 sigmoid matrix unit at depth L, M particles per layer, in three
implementations timed in the same run:

* engine, native: :func:`mfsym.engine.training.train_stack` with a
  :class:`~mfsym.engine.models.ResNet` on the fused C step (``backend="native"``:
  forward through the layers, cotangent, backward and update in one call per step);
* engine, eager: the same with ``backend="eager"`` (closed-form unit VJPs in PyTorch);
* plain autograd: the same ResNet written directly below, batched over runs, the force by
  autograd of the loss ``mean_b ‖Φ(x_b) − y_b‖² + (τ/N) Σ‖θ‖²`` (N = L·M), the update
  ``θ ← θ − α ∇ + √(2αβ/N) ξ`` with fresh samples, targets and noise every step.

With ``--mlp N …`` also the one-layer ensemble of the tanh mlp unit (2 → 2, hidden width
2) at those N, engine native and eager against the same plain autograd step of
``Φ(x) = (1/N) Σᵢ W₂ⁱ tanh(W₁ⁱ x)``.

Engine figures are the marginal cost of the step loop after a warm-up, as in
``bench_engine.py`` (whose timing helpers this script reuses).  A stack of R runs is the
three teachers over ⌈R/3⌉ seeds (for the ResNet, the paper's, repeated at every layer).
Every figure is the median of ``--repeat`` measurements with their spread (max − min, in
percent of the median); ``†`` and ``*`` mark upper bounds and busy machines as in
``bench_engine.py``.

    python benchmarks/bench_deep.py            # L ∈ {1, 4}, M ∈ {100, 1000}, R = 12
    python benchmarks/bench_deep.py --mlp 1000 2000
    python benchmarks/bench_deep.py --quick    # L = 4, M = 100
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from bench_engine import TEACHERS, cell, engine_runs, load, time_engine, time_steps

from mfsym.core.groups import c2_swap
from mfsym.core.teachers import Teacher, paper_teachers, random_teacher
from mfsym.core.units import make_unit
from mfsym.engine.models import ResNet, repeat_layers
from mfsym.engine.training import TrainConfig


class DeepBaseline:
    """Plain eager noisy SGD of R mean-ODE ResNets (C₂, 2×2 sigmoid unit), vanilla."""

    def __init__(self, R, L, M, cfg: TrainConfig, group, teachers):
        self.R, self.L, self.M, self.cfg = R, L, M, cfg
        self.kinds = [torch.arange(i, R, 3) for i in range(3)]  # runs of each teacher
        self.dtype = getattr(torch, cfg.dtype) if cfg.dtype != "auto" else torch.float32
        self.t = [torch.as_tensor(teachers[k].particles, dtype=self.dtype).repeat(L, 1)
                  for k in TEACHERS]
        p_e = torch.tensor(group.reynolds(), dtype=self.dtype)
        self.theta = 0.25 * torch.randn(R, L * M, p_e.shape[0], dtype=self.dtype) @ p_e
        self.gen = torch.Generator().manual_seed(0)

    def net(self, z, x):
        """h_l = h_{l−1} + (1/(L·K)) Σ_i sigmoid(z_{l,i} h_{l−1}): z (r, L·K, 4), x (r, S, 2)."""
        zl = z.reshape(z.shape[0], self.L, -1, 2, 2)
        h = x
        for layer in range(self.L):
            pre = torch.einsum("rnkl,rsl->rsnk", zl[:, layer], h)
            h = h + torch.sigmoid(pre).sum(2) / z.shape[1]
        return h

    def step(self):
        c = self.cfg
        n = self.L * self.M
        x = c.input_std * torch.randn(self.R, c.batch_size, 2, generator=self.gen,
                                      dtype=self.dtype)
        y = torch.empty_like(x)
        with torch.no_grad():
            for runs, t in zip(self.kinds, self.t, strict=True):
                y[runs] = self.net(t.expand(len(runs), -1, -1), x[runs])
        theta = self.theta.requires_grad_(True)
        loss = ((self.net(theta, x) - y) ** 2).sum(-1).mean(-1).sum()
        loss = loss + c.tau / n * (theta**2).sum()
        (grad,) = torch.autograd.grad(loss, theta)
        noise = torch.randn(self.theta.shape, generator=self.gen, dtype=self.dtype)
        with torch.no_grad():
            self.theta = (theta - c.alpha * grad
                          + math.sqrt(2 * c.alpha * c.beta / n) * noise).detach()


class MLPBaseline(DeepBaseline):
    """Plain eager noisy SGD of R ensembles of N tanh mlp units (2 → 2, hidden width 2)."""

    def __init__(self, R, N, cfg: TrainConfig, group, teachers):
        super().__init__(R, 1, N, cfg, group, teachers)

    def net(self, z, x):
        """Φ(x) = (1/N) Σᵢ W₂ⁱ tanh(W₁ⁱ x): z (r, N, 8) = (vec W₁, vec W₂), x (r, S, 2)."""
        w1, w2 = z[..., :4].reshape(*z.shape[:2], 2, 2), z[..., 4:].reshape(*z.shape[:2], 2, 2)
        a = torch.tanh(torch.einsum("rnhl,rsl->rsnh", w1, x))
        return torch.einsum("rnkh,rsnh->rsk", w2, a) / z.shape[1]


def engine_pair(runs, n, args, group, model, teachers):
    """The engine's step time on the native and on the eager path."""
    return [time_engine(runs, n, args.steps, group, model, teachers, args.repeat,
                        args.threads, device="cpu", dtype=args.dtype, backend=backend)
            for backend in ("native", "eager")]


def row(label, timings, updates):
    nat, eag, ref = timings
    return (f"{label:>12}  {cell(nat, updates):>18}  {cell(eag, updates):>18}  "
            f"{cell(ref, updates):>18}  {ref.median / nat.median:7.2f}x "
            f"{eag.median / nat.median:7.2f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="L = 4, M = 100 only")
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--M", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--mlp", type=int, nargs="*", default=[],
                    help="N of the mlp ensemble rows (none by default)")
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = ap.parse_args(argv)
    if args.quick:
        args.depths, args.M = [4], [100]
    torch.set_num_threads(args.threads)
    unit = make_unit("matrix", 2, 2, "sigmoid")
    group = unit.group(c2_swap())
    base = paper_teachers(group)
    plain = TrainConfig(dtype=args.dtype)
    B = plain.batch_size
    runs = engine_runs("vanilla", args.runs)
    print(f"threads {args.threads}, load average {load()}, R = {args.runs}, B = {B}, "
          f"{args.dtype}; "
          "ns per particle-sample-layer update, median (±spread) of "
          f"{args.repeat}")
    print(f"{'model':>12}  {'engine native':>18}  {'engine eager':>18}  "
          f"{'plain autograd':>18}  vs autograd, vs eager")
    for L in args.depths:
        teachers = {k: Teacher(k, repeat_layers(t.particles, L)) for k, t in base.items()}
        for M in args.M:
            eng = engine_pair(runs, L * M, args, group, ResNet(unit, L), teachers)
            ref = time_steps(DeepBaseline(args.runs, L, M, plain, group, base),
                             args.steps, args.repeat, args.threads)
            print(row(f"L={L} M={M}", [*eng, ref], args.runs * L * M * B), flush=True)
    if args.mlp:
        mlp = make_unit("mlp", 2, 2, "tanh", hidden=2)
        mgroup = mlp.group(c2_swap())
        rng = np.random.default_rng(0)
        mteach = {k: random_teacher(mgroup, k, 3, rng) for k in TEACHERS}
    for n in args.mlp:
        eng = engine_pair(runs, n, args, mgroup, mlp, mteach)
        ref = time_steps(MLPBaseline(args.runs, n, plain, mgroup, mteach),
                         args.steps, args.repeat, args.threads)
        print(row(f"mlp N={n}", [*eng, ref], args.runs * n * B), flush=True)


if __name__ == "__main__":
    main()
