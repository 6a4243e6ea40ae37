"""fig_saddle_escape: vanilla's escape from the saddle on E^G against N (PAPER.md §12).

Drawn from ``saddle.nc`` (:mod:`mfsym.pipeline.saddle`), one colour per N:

(a) the seed-mean RMD to E^G, ``m(d_N)(t)``, on a log axis, with the band over seeds
    (min–max or ± one std, ``figures.spread``), the escape level δ as a horizontal line and
    the lower edge (``floor``) of the windows the rates are fitted on;
(b) the collapse ``√N · m(d_N)(t)``, log axis, with the first escape time t_esc(N_min)
    marked (the collapse spread is measured before it);
(c) the escape time against ln N: each seed's t_esc (small dots), the seed-mean curve's
    t_esc with its bootstrap interval, the fitted line of slope b and the line of slope
    1/(2λ_ref) through the same centroid (mean ln N, mean t_esc over the escaping N).

Values ≤ 0 (the exact SI start at t = 0) are left out of the log axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from ..records import lineage
from ..records.results import read_dataset
from .style import apply_style, save_figure, seed_band


def _positive(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0, values, np.nan)


def _fmt(value: float, interval) -> str:
    lo, hi = (float(v) for v in interval)
    if math.isnan(value):
        return "n/a"
    if math.isnan(lo) or math.isnan(hi):
        return f"{value:.3g}"
    return f"{value:.3g} [{lo:.3g}, {hi:.3g}]"


def plot_saddle_escape(ds: xr.Dataset, spread: str = "minmax"):
    """The figure (see the module docstring); returns the Figure."""
    vanilla = ds["rmd_projected_curve"].sel(scheme="vanilla").transpose("N", "time", "seed")
    time = ds["time"].values
    ns = ds["N"].values
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(ns)))
    delta = float(ds.attrs["delta"])
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.6))
    t_esc = ds["escape_time"].values
    escaped = np.isfinite(t_esc)
    for i, n in enumerate(ns):
        mean, lo, hi = seed_band(vanilla.sel(N=n).values, spread)
        label = f"N = {n}"
        axes[0].plot(time, _positive(mean), color=colors[i], label=label)
        axes[0].fill_between(time, _positive(lo), _positive(hi), color=colors[i], alpha=0.15,
                             lw=0)
        axes[1].plot(time, _positive(math.sqrt(n) * mean), color=colors[i], label=label)
    axes[0].axhline(delta, color="k", ls="--", lw=1, label=f"δ = {delta:g}")
    floor = float(ds.attrs["floor"])
    axes[0].axhline(floor, color="gray", ls=":", lw=1, label=f"rate floor {floor:g}")
    axes[0].set_ylabel("RMD to E$^G$ (vanilla)")
    axes[0].set_title("(a) distance to E$^G$", fontsize="small")
    if escaped.any():
        first = float(np.min(t_esc[escaped]))
        axes[1].axvline(first, color="k", ls=":", lw=1,
                        label=f"first escape t = {first:.3g}")
    axes[1].set_ylabel(r"$\sqrt{N}\,\cdot$ RMD to E$^G$")
    spread_txt = _fmt(float(ds["collapse_spread"]), ds["collapse_spread_interval"].values)
    axes[1].set_title(f"(b) collapse; largest spread {spread_txt}", fontsize="small")
    for ax in axes[:2]:
        ax.set_yscale("log")
        ax.set_xlabel("mean-field time t")
        ax.legend(fontsize="xx-small", ncol=2)
    _escape_panel(axes[2], ds, colors)
    fig.suptitle(f"Escape from the saddle on E$^G$ ({ds.attrs['setting']}; "
                 f"{ds.sizes['seed']} seeds, {ds.attrs['dtype']}; rate window from "
                 f"{float(ds.attrs['floor']):g} to δ)", fontsize="small")
    return fig


def _escape_panel(ax, ds: xr.Dataset, colors) -> None:
    ns = ds["N"].values
    log_n = np.log(ns)
    t_esc = ds["escape_time"].values
    escaped = np.isfinite(t_esc)
    per_seed = ds["escape_time_seed"].transpose("N", "seed").values
    for i in range(len(ns)):
        ax.scatter(np.full(per_seed.shape[1], log_n[i]), per_seed[i], s=8, alpha=0.45,
                   color=colors[i], lw=0)
    interval = ds["escape_time_interval"].transpose("N", "bound").values
    err = np.nan_to_num(np.abs(np.vstack([t_esc - interval[:, 0], interval[:, 1] - t_esc])))
    ax.errorbar(log_n[escaped], t_esc[escaped], yerr=err[:, escaped], fmt="o", color="k",
                ms=4, capsize=2, label="seed-mean curve")
    ax.set_xlabel("ln N")
    ax.set_ylabel(f"escape time (RMD ≥ {float(ds.attrs['delta']):g})")
    b = float(ds["escape_slope"])
    pred = float(ds["predicted_slope"])
    if escaped.sum() >= 2 and math.isfinite(b):
        x0, y0 = log_n[escaped].mean(), t_esc[escaped].mean()
        xs = np.array([log_n[escaped].min(), log_n[escaped].max()])
        ax.plot(xs, y0 + b * (xs - x0), "-", color="tab:red",
                label=f"fit: b = {_fmt(b, ds['escape_slope_interval'].values)}")
        if math.isfinite(pred):
            ax.plot(xs, y0 + pred * (xs - x0), "--", color="tab:blue",
                    label=f"1/(2λ_ref) = {_fmt(pred, ds['predicted_slope_interval'].values)}, "
                          f"N_ref = {ds.attrs['reference_N']}")
        ratio = _fmt(float(ds["law_ratio"]), ds["law_ratio_interval"].values)
        ax.set_title(f"(c) ln N law: b·2λ_ref = {ratio}", fontsize="small")
    else:
        ax.set_title(f"(c) {int(ds.attrs['escaped_n'])} N escape within T: no law to fit",
                     fontsize="small")
    ax.legend(fontsize="xx-small")


def saddle_job(path, figures_cfg: Mapping, outputs: Mapping, *,
               config: Mapping | None = None) -> None:
    """Read ``saddle.nc``, draw :func:`plot_saddle_escape`, write ``outputs``; with
    ``config``, a file written under another configuration of the study is refused."""
    apply_style(figures_cfg["context"], figures_cfg["style"])
    ds = read_dataset(path, config, None if config is None else lineage.SADDLE)
    fig = plot_saddle_escape(ds, figures_cfg["spread"])
    save_figure(fig, outputs, figures_cfg["dpi"])
