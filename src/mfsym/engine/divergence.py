"""Which runs of a stack diverged, and the error that names them.

Every ``check_every`` steps (and before each checkpoint and at the end) a run of particles
``(N, D)`` has diverged when a value is not finite (the kernel records the first step at
which it saw one), when the RMS of its particles exceeds
``divergence_factor`` times its reference scale (the largest of its initial cloud's RMS,
its teacher's RMS and ``init_std·√D``), or when its mean minibatch loss since the last
snapshot exceeds ``divergence_factor`` times its reference loss (the larger of its initial
population risk and the risk ``E‖y‖²`` of the zero predictor).  A bounded activation keeps
the loss bounded while the particles run away, hence the two quantities
(the references are kept by each block, :meth:`mfsym.engine.blocks.Block.growth`).  The
engine raises :class:`TrainingDiverged` instead of writing a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import torch

from .train_config import TrainConfig


class TrainingDiverged(RuntimeError):
    """One or more runs diverged (see the module docstring); ``runs`` lists them, each with
    its teacher, scheme, seed, ``step``, ``quantity`` and, for growth, ``value`` and
    ``reference``."""

    def __init__(self, message: str, runs: list[dict]):
        super().__init__(message)
        self.runs = runs


def diverged_runs(blocks: Sequence, step: int, window: int, factor: float) -> list[dict]:
    """The runs of ``blocks`` that diverged by ``step``, each as its RunSpec's fields plus
    ``step`` and ``quantity`` ("non-finite value", or the grown quantity with its ``value``
    and ``reference``); ``window``: the steps since the last snapshot."""
    bad_runs = []
    for b in blocks:
        first_bad = b.tally.first_bad.cpu().numpy()
        nonfinite = ~torch.isfinite(b.theta).reshape(len(b.runs), -1).all(1).cpu().numpy()
        grown = b.growth(window, factor)
        for i, r in enumerate(b.runs):
            if first_bad[i] >= 0 or nonfinite[i]:
                at = int(first_bad[i]) if first_bad[i] >= 0 else step
                bad_runs.append({**asdict(r), "step": at, "quantity": "non-finite value"})
            elif i in grown:
                quantity, value, ref = grown[i]
                bad_runs.append({**asdict(r), "step": step, "quantity": quantity,
                                 "value": value, "reference": ref})
    return bad_runs


def divergence_report(bad_runs: Sequence[dict], cfg: TrainConfig, n_particles: int, init: str,
                      dtype: str, backend: str) -> str:
    """The message of :class:`TrainingDiverged`: every diverged run with its step and time
    ``step/N``, and the hyperparameters a user would change."""
    total = cfg.total_steps(n_particles)
    lines = []
    for d in bad_runs:
        what = (
            "non-finite" if "value" not in d else
            f"{d['quantity']} {d['value']:.3g} > divergence_factor × reference "
            f"{d['reference']:.3g}"
        )
        lines.append(
            f"  teacher={d['teacher']} scheme={d['scheme']} seed={d['seed']}: {what} at "
            f"step {d['step']} of {total} (t = {d['step'] / n_particles:.4g})"
        )
    return (
        f"training diverged for {len(bad_runs)} run(s) (N={n_particles}, init={init}; "
        f"alpha={cfg.alpha}, tau={cfg.tau}, beta={cfg.beta}, batch_size={cfg.batch_size}, "
        f"T={cfg.T}, da_mode={cfg.da_mode}, dtype={dtype}, backend={backend}, "
        f"divergence_factor={cfg.divergence_factor}, check_every={cfg.check_every}):\n"
        + "\n".join(lines) + "\n"
        "No result was written; lower alpha or use dtype float64."
    )
