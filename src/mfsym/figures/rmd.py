"""RMD figures (PAPER.md §6): fig_rmd_si_init and fig_rmd_wi_init.

Columns are the teachers.  Row 1: the distance of the trained cloud ν_N from the invariant
laws vs N — RMD(ν_N, (P_E)#ν_N) (distance from SI) for the SI start, RMD(ν_N, ν_N^G)
(distance from WI) for the WI start — one line per scheme.  Row 2: RMD between the free,
DA and FA clouds; row 3: RMD of each to EA; where the summary has ``rmd_baseline``, rows
2 and 3 also show it as a dashed black line: the RMD between two runs of the same scheme
from the same start with independent random streams, the finite-N floor any two runs
share.  Last row, where the summary has ``l2_between``: the L²(π) distance between the
trained models of each pair (function space), with its baseline ``l2_baseline``.  Log-log
axes; the line is the mean over
seeds, the band its min–max (or ± one std).  The y axis says RMD or RMD² (RMD² = W₂² /
(M₂(μ) + M₂(ν))).  Values below ``log_floor`` (e.g. EA's exact 0 from an SI start) are
drawn at the floor, as hollow markers.  A summary of the rotation stage
(``rotation/summary.nc``, attribute ``setting``) is drawn the same way
(fig_rmd_so2_si_init); its title names the setting and its RMD to the symmetrised cloud
the K_sym of the orbit that stands for ν^G.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from ..records import lineage
from ..records.results import read_dataset
from .style import apply_style, pair_colors, save_figure, scheme_colors, seed_band

QUANTITIES = ("RMD", "RMD2")
DISTANCE_FROM = {"SI": ("rmd_projected", "to projected on $E^G$"),
                 "WI": ("rmd_symmetrized", "to symmetrised")}


def _power(values: np.ndarray, quantity: str) -> np.ndarray:
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; allowed: {list(QUANTITIES)}")
    return values**2 if quantity == "RMD2" else values


def _label(quantity: str) -> str:
    return "RMD²" if quantity == "RMD2" else "RMD"


def _draw(ax, n_values, values, color, label, spread, floor, style="-"):
    """Mean line and seed band of ``values`` (N, seed); points below ``floor`` hollow."""
    mean, lo, hi = seed_band(values, spread)
    shown = np.maximum(mean, floor)
    ax.plot(n_values, shown, style, color=color, label=label, lw=1.5)
    below = mean < floor
    ax.scatter(np.asarray(n_values)[~below], shown[~below], color=color, s=14, zorder=3)
    ax.scatter(np.asarray(n_values)[below], shown[below], facecolors="none",
               edgecolors=[color], s=22, zorder=3)
    ax.fill_between(n_values, np.maximum(lo, floor), np.maximum(hi, floor), color=color,
                    alpha=0.2, lw=0)


def _baseline(ax, ds, var, teacher, n_values, quantity, spread, floor, size_dim="N",
              sel=None, suffix="", style="--"):
    """The same-scheme floor ``var`` (N, seed) as a black line with its band (``sel``: the
    line's label of a line axis such as depth); nothing where it was not trained (NaN)."""
    if var not in ds:
        return
    vals = ds[var].sel(teacher=teacher, **(sel or {})).transpose(size_dim, "seed").values
    if np.isnan(vals).all():
        return
    mean, lo, hi = seed_band(_power(vals, quantity) if quantity else vals, spread)
    label = f"{ds.attrs.get('baseline', 'same scheme')} twin (own stream){suffix}"
    ax.plot(n_values, np.maximum(mean, floor), style, color="black", lw=1.2, label=label)
    ax.fill_between(n_values, np.maximum(lo, floor), np.maximum(hi, floor), color="black",
                    alpha=0.08, lw=0)


def _pair_rows(pairs) -> list[list[str]]:
    """Pairs without EA (row 2), pairs with EA (row 3); empty rows are dropped."""
    free = [p for p in pairs if "EA" not in p.split("-")]
    vs_ea = [p for p in pairs if "EA" in p.split("-")]
    return [row for row in (free, vs_ea) if row]


#: Line styles of the depths of a deep model (one line per depth and scheme|pair).
DEPTH_STYLES = ("-", "--", ":", "-.")


def _lines(ds: xr.Dataset, line_dim: str | None, symbol: str) -> list[tuple[dict, str, str]]:
    """(selection, label suffix ``, <symbol>=<value>``, line style) per label of
    ``line_dim`` (one plain line without)."""
    if line_dim is None:
        return [({}, "", "-")]
    return [({line_dim: v}, f", {symbol}={v}", DEPTH_STYLES[i % len(DEPTH_STYLES)])
            for i, v in enumerate(ds[line_dim].values)]


def plot_rmd(
    summary: xr.Dataset, init: str, quantity: str = "RMD", spread: str = "minmax",
    log_floor: float = 1e-6, size_dim: str = "N", line_dim: str | None = None,
    size_label: str = "N (particles)", title_prefix: str = "", line_symbol: str = "L",
):
    """The RMD figure of one initialisation (see the module docstring); returns the Figure.

    ``size_dim`` is the x axis (N; M, particles per layer, for a ResNet); with ``line_dim``
    (e.g. ``depth``) every scheme or pair gets one line style per label of that axis,
    labelled ``<line_symbol>=<value>``.
    """
    if init not in DISTANCE_FROM:
        raise ValueError(f"unknown init {init!r}; allowed: {list(DISTANCE_FROM)}")
    if init not in summary["init"].values:
        raise ValueError(f"the summary has no {init!r} runs (inits: "
                         f"{list(summary['init'].values)})")
    ds = summary.sel(init=init)
    var, what = DISTANCE_FROM[init]
    if init == "WI" and "symmetrized_points" in summary.attrs:  # ν^G of a compact group
        what += f" ({summary.attrs['symmetrized_points']}-point orbit)"
    setting = f"{summary.attrs['setting']}, " if "setting" in summary.attrs else ""
    teachers = list(ds["teacher"].values)
    schemes = list(ds["scheme"].values)
    n_values = ds[size_dim].values
    rows = _pair_rows(list(ds["pair"].values))
    l2 = "l2_between" in ds
    colors, pcolors = scheme_colors(schemes), pair_colors(list(ds["pair"].values))
    n_rows = 1 + len(rows) + int(l2)
    fig, axes = plt.subplots(n_rows, len(teachers), figsize=(3.2 * len(teachers),
                             2.6 * n_rows), sharex=True, squeeze=False)
    q = _label(quantity)
    for c, teacher in enumerate(teachers):
        ax = axes[0, c]
        for sel, suffix, style in _lines(ds, line_dim, line_symbol):
            for scheme in schemes:
                vals = _power(ds[var].sel(teacher=teacher, scheme=scheme, **sel)
                              .transpose(size_dim, "seed").values, quantity)
                _draw(ax, n_values, vals, colors[scheme], scheme + suffix, spread, log_floor,
                      style)
            for r, row in enumerate(rows, start=1):
                for pair in row:
                    vals = _power(ds["rmd_between"].sel(teacher=teacher, pair=pair, **sel)
                                  .transpose(size_dim, "seed").values, quantity)
                    _draw(axes[r, c], n_values, vals, pcolors[pair], pair + suffix, spread,
                          log_floor, style)
                _baseline(axes[r, c], ds, "rmd_baseline", teacher, n_values, quantity, spread,
                          log_floor, size_dim, sel, suffix, style if line_dim else "--")
        ax.set_title(f"teacher: {teacher}")
        if l2:
            ax = axes[-1, c]
            for pair in ds["pair"].values:
                vals = ds["l2_between"].sel(teacher=teacher, pair=pair).transpose(
                    "N", "seed").values
                _draw(ax, n_values, vals, pcolors[str(pair)], str(pair), spread, log_floor)
            _baseline(ax, ds, "l2_baseline", teacher, n_values, None, spread, log_floor)
    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(n_values, [str(n) for n in n_values])
        ax.xaxis.set_minor_locator(plt.NullLocator())
    for ax in axes[-1]:
        ax.set_xlabel(size_label)
    axes[0, 0].set_ylabel(f"{q} {what}")
    for r, row in enumerate(rows, start=1):
        axes[r, 0].set_ylabel(f"{q} between schemes" if r == 1 and "EA" not in row[0]
                              else f"{q} to EA")
    if l2:
        axes[-1, 0].set_ylabel("L²(π) between models")
    for r in range(axes.shape[0]):
        axes[r, -1].legend(fontsize="x-small", loc="best")
    fig.suptitle(f"{title_prefix}{setting}{init} initialisation: mean over {ds.sizes['seed']} "
                 f"seeds, band = "
                 f"{'min–max' if spread == 'minmax' else '± 1 std'}")
    return fig


def rmd_job(
    summary_path, init: str, figures_cfg: Mapping, outputs: Mapping, *,
    config: Mapping | None = None, scope=lineage.SUMMARY,
) -> None:
    """Read summary.nc, draw :func:`plot_rmd` and write ``outputs`` ({format: path}).

    With ``config``, a summary written under another configuration (where ``scope``
    determines it; the rotation stage's summary: :data:`lineage.ROTATION`) is refused."""
    apply_style(figures_cfg["context"], figures_cfg["style"])
    summary = read_dataset(summary_path, config, None if config is None else scope)
    fig = plot_rmd(summary, init, figures_cfg["quantity"], figures_cfg["spread"],
                   figures_cfg["log_floor"])
    save_figure(fig, outputs, figures_cfg["dpi"])
