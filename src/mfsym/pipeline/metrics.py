"""The metrics stage's job: a run file and the config sections in, its metrics file out.

The metrics themselves (PAPER.md §5) are :mod:`mfsym.measure.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..measure.metrics import run_metrics
from ..records import lineage
from ..records.results import read_dataset, write_dataset
from .config import build_group, build_unit


def metrics_job(
    group_cfg: Mapping, unit_cfg: Mapping, pairs: Sequence[str], runs_path, output,
    config: Mapping, eval_path=None, threads: int = 1,
) -> None:
    """Read a run dataset, compute :func:`run_metrics` and write it atomically; a run file
    trained under another ``config`` (:data:`mfsym.records.lineage.RUNS`) is refused.

    ``eval_path``: the evaluation sample (``mfsym.pipeline.data``), on which the L²
    distances between the trained models are computed (None: not computed); ``threads``:
    threads solving the job's independent W₂ problems."""
    runs = read_dataset(runs_path, config, lineage.RUNS)
    x_eval = None
    if eval_path is not None:
        x_eval = read_dataset(eval_path, config, lineage.EVAL_SAMPLE)["x_eval"].values
    ds = run_metrics(runs, build_group(group_cfg, unit_cfg), pairs,
                     unit=build_unit(group_cfg, unit_cfg), x_eval=x_eval, threads=threads)
    write_dataset(
        ds, output, config, f"per-run metrics, init={ds.attrs['init']}, N={ds.attrs['N']}"
    )
