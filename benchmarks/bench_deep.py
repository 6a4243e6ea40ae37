"""Speed of the engine's mean-ODE ResNet (PAPER.md §10) against a plain batched PyTorch step.

Unit of measure: nanoseconds per particle-sample-layer update, the wall time of one step
divided by runs × L·M × B (each of the L·M particles sits in one layer and is updated from
B samples).  Vanilla scheme, C₂ and the 2×2 sigmoid matrix unit, SI start, float32.

Engine: :func:`mfsym.engine.training.train_stack` with a
:class:`~mfsym.engine.models.ResNet` (forward through the layers, closed-form unit VJPs
back; the eager kernel), timed as the marginal cost of its step loop after a warm-up, as
in ``bench_engine.py`` (whose timing helpers this script reuses).  A stack of R runs is
the paper's three teachers over ⌈R/3⌉ seeds, each teacher repeated at every layer.

Baseline: the same ResNet written directly below, batched over runs, the force by
autograd of the loss ``mean_b ‖Φ(x_b) − y_b‖² + (τ/N) Σ‖θ‖²`` (N = L·M), the update
``θ ← θ − α ∇ + √(2αβ/N) ξ`` with fresh samples, targets and noise every step.

Every figure is the median of ``--repeat`` measurements with their spread (max − min, in
percent of the median); ``†`` and ``*`` mark upper bounds and busy machines as in
``bench_engine.py``.

    python benchmarks/bench_deep.py            # L ∈ {1, 4}, M ∈ {100, 1000}, R = 12
    python benchmarks/bench_deep.py --quick    # L = 4, M = 100
"""

from __future__ import annotations

import argparse
import math

import torch
from bench_engine import TEACHERS, cell, engine_runs, load, time_engine, time_steps

from mfsym.core.groups import c2_swap
from mfsym.core.teachers import Teacher, paper_teachers
from mfsym.core.units import make_unit
from mfsym.engine.models import ResNet, repeat_layers
from mfsym.engine.training import TrainConfig


class DeepBaseline:
    """Plain eager noisy SGD of R mean-ODE ResNets (C₂, 2×2 sigmoid unit), vanilla."""

    def __init__(self, R, L, M, cfg: TrainConfig, group, teachers):
        self.R, self.L, self.M, self.cfg = R, L, M, cfg
        self.kinds = [torch.arange(i, R, 3) for i in range(3)]  # runs of each teacher
        self.t = [torch.as_tensor(teachers[k].particles, dtype=torch.float32).repeat(L, 1)
                  for k in TEACHERS]
        p_e = torch.tensor(group.reynolds(), dtype=torch.float32)
        self.theta = 0.25 * torch.randn(R, L * M, 4) @ p_e
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
        x = c.input_std * torch.randn(self.R, c.batch_size, 2, generator=self.gen)
        y = torch.empty_like(x)
        with torch.no_grad():
            for runs, t in zip(self.kinds, self.t, strict=True):
                y[runs] = self.net(t.expand(len(runs), -1, -1), x[runs])
        theta = self.theta.requires_grad_(True)
        loss = ((self.net(theta, x) - y) ** 2).sum(-1).mean(-1).sum()
        loss = loss + c.tau / n * (theta**2).sum()
        (grad,) = torch.autograd.grad(loss, theta)
        noise = torch.randn(self.theta.shape, generator=self.gen)
        with torch.no_grad():
            self.theta = (theta - c.alpha * grad
                          + math.sqrt(2 * c.alpha * c.beta / n) * noise).detach()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="L = 4, M = 100 only")
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--M", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if args.quick:
        args.depths, args.M = [4], [100]
    torch.set_num_threads(args.threads)
    unit = make_unit("matrix", 2, 2, "sigmoid")
    group = unit.group(c2_swap())
    base = paper_teachers(group)
    B = TrainConfig().batch_size
    print(f"threads {args.threads}, load average {load()}, R = {args.runs}, B = {B}; "
          "ns per particle-sample-layer update, median (±spread) of "
          f"{args.repeat}")
    print(f"{'L':>3} {'M':>6}  {'engine':>18}  {'plain autograd':>18}  speed-up")
    for L in args.depths:
        teachers = {k: Teacher(k, repeat_layers(t.particles, L)) for k, t in base.items()}
        for M in args.M:
            updates = args.runs * L * M * B
            eng = time_engine(engine_runs("vanilla", args.runs), L * M, args.steps, group,
                              ResNet(unit, L), teachers, args.repeat, args.threads,
                              device="cpu")
            ref = time_steps(DeepBaseline(args.runs, L, M, TrainConfig(), group, base),
                             args.steps, args.repeat, args.threads)
            print(f"{L:>3} {M:>6}  {cell(eng, updates):>18}  {cell(ref, updates):>18}  "
                  f"{ref.median / eng.median:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
