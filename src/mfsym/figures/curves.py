"""Loss curves (PAPER.md §6): fig_loss_curves.

Columns are the teachers; for each initialisation two rows: the training loss (mean
minibatch loss over the window ending at each snapshot) and the population risk, against
the mean-field time t = step / N, for one N (the largest by default), one line per scheme
(mean over seeds, band min–max or ± one std).  Time on a symlog axis (t = 0 included);
values ≤ 0, which a log axis cannot show, are left out.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from ..records import lineage
from ..records.results import read_dataset
from .style import apply_style, save_figure, scheme_colors, seed_band

CURVES = (("train_loss_curve", "training loss"), ("risk_curve", "population risk"))


def plot_curves(summary: xr.Dataset, n: int | None = None, spread: str = "minmax"):
    """Training loss and population risk vs time at N = ``n`` (None: the largest N)."""
    n = int(summary["N"].values.max()) if n is None else int(n)
    if n not in summary["N"].values:
        raise ValueError(f"N = {n} is not in the summary; available: "
                         f"{[int(v) for v in summary['N'].values]}")
    ds = summary.sel(N=n)
    inits, teachers = list(ds["init"].values), list(ds["teacher"].values)
    schemes = list(ds["scheme"].values)
    colors = scheme_colors(schemes)
    time = ds["time"].values
    positive = time[time > 0]
    fig, axes = plt.subplots(2 * len(inits), len(teachers), sharex=True, squeeze=False,
                             figsize=(3.2 * len(teachers), 2.3 * 2 * len(inits)))
    for i, init in enumerate(inits):
        for k, (var, label) in enumerate(CURVES):
            r = 2 * i + k
            for c, teacher in enumerate(teachers):
                ax = axes[r, c]
                for scheme in schemes:
                    vals = ds[var].sel(init=init, teacher=teacher, scheme=scheme)
                    values = vals.transpose("time", "seed").values
                    mean, lo, hi = seed_band(np.where(values > 0, values, np.nan), spread)
                    ax.plot(time, mean, color=colors[scheme], label=scheme, lw=1.3)
                    ax.fill_between(time, lo, hi, color=colors[scheme], alpha=0.2, lw=0)
                ax.set_yscale("log")
                ax.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
                if r == 0:
                    ax.set_title(f"teacher: {teacher}")
            axes[r, 0].set_ylabel(f"{label}\n({init} start)")
    for ax in axes[-1]:
        ax.set_xlabel("mean-field time t")
    axes[0, -1].legend(fontsize="x-small")
    fig.suptitle(f"N = {n}: mean over {ds.sizes['seed']} seeds, band = "
                 f"{'min–max' if spread == 'minmax' else '± 1 std'}")
    return fig


def curves_job(
    summary_path, figures_cfg: Mapping, outputs: Mapping, *, config: Mapping | None = None
) -> None:
    """Read summary.nc, draw :func:`plot_curves` at ``figures.curves_N``, write ``outputs``.

    With ``config``, a summary written under another configuration is refused."""
    apply_style(figures_cfg["context"], figures_cfg["style"])
    summary = read_dataset(summary_path, config, lineage.SUMMARY)
    fig = plot_curves(summary, figures_cfg["curves_N"], figures_cfg["spread"])
    save_figure(fig, outputs, figures_cfg["dpi"])
