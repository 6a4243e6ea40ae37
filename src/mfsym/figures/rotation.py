"""fig_fa_quadrature: FA over the K-point subgroup of a compact group, against K.

Left: FA_K's model against the true group average of the same trained cloud,
``‖Φ̂_K − Φ̂_G‖ / ‖Φ̂_G‖`` (Φ̂_G by the dataset's ``reference_points``-point subgroup).
Right: RMD(ν_K, (P_E)#ν_K), the distance of FA_K's trained cloud from SI laws; from an SI
start it stays at rounding for K ≥ 2 (G_K fixes exactly E^G), while K = 1 of SO(2) is
vanilla.  One line per initialisation: mean over seeds, band min–max (or ± one std);
values below ``log_floor`` are drawn at it as hollow markers.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from ..records import lineage
from ..records.results import read_dataset
from .style import apply_style, save_figure, seed_band

PANELS = (
    ("model_distance", "FA$_K$ model vs group average\n(relative RMS)"),
    ("rmd_projected", "RMD to projected on $E^G$"),
)
INIT_COLORS = {"SI": "tab:blue", "WI": "tab:orange"}


def plot_fa_quadrature(ds: xr.Dataset, spread: str = "minmax", log_floor: float = 1e-16):
    """The figure (see the module docstring); returns the Figure."""
    ks = ds["K"].values
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.2))
    for ax, (var, label) in zip(axes, PANELS, strict=True):
        for init in ds["init"].values:
            vals = ds[var].sel(init=init).transpose("K", "seed").values
            mean, lo, hi = seed_band(vals, spread)
            color = INIT_COLORS.get(str(init), "tab:gray")
            shown = np.maximum(mean, log_floor)
            below = mean < log_floor
            ax.plot(ks, shown, "-", color=color, label=f"{init} start")
            ax.scatter(ks[~below], shown[~below], color=color, s=14, zorder=3)
            ax.scatter(ks[below], shown[below], facecolors="none", edgecolors=[color], s=22)
            ax.fill_between(ks, np.maximum(lo, log_floor), np.maximum(hi, log_floor),
                            color=color, alpha=0.2, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_xlabel("K (points of the quadrature subgroup)")
        ax.set_ylabel(label)
        ax.legend(fontsize="x-small")
    fig.suptitle(f"FA over K points of {ds.attrs['group']} (N = {ds.attrs['N']}, teacher "
                 f"{ds.attrs['teacher']}, reference K = {ds.attrs['reference_points']}; "
                 f"{ds.sizes['seed']} seeds)", fontsize="small")
    return fig


def quadrature_job(path, figures_cfg: Mapping, outputs: Mapping, *,
                   config: Mapping | None = None) -> None:
    """Read ``rotation/quadrature.nc``, draw :func:`plot_fa_quadrature`, write ``outputs``;
    with ``config``, a file written under another configuration is refused."""
    apply_style(figures_cfg["context"], figures_cfg["style"])
    ds = read_dataset(path, config, None if config is None else lineage.ROTATION)
    fig = plot_fa_quadrature(ds, figures_cfg["spread"])
    save_figure(fig, outputs, figures_cfg["dpi"])
