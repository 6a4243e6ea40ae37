"""Figures of the Noether studies (PAPER.md §9); they read the study datasets only.

* ``fig_noether_drift`` — charge drift ``max_i |Q_i(s) − Q_i(0)|`` against the step η
  (log-log, slope-1 guide), one panel per scheme, one colour per activation, solid for
  online SGD and dashed for full-batch GD; tanh is the negative control; below, charges
  under weight decay against ``e^{−2λs} Q(0)`` and the drift against the temperature β.
* ``fig_finite_n_invariance`` — distance to E^G from an SI start (top) and orbit-pairing
  error from an orbit-paired start (bottom) against flow time, one panel per scheme, one
  line per training mode.  Exact zeros are drawn at the floor of the log axis.
* ``fig_weight_decay_attraction`` — distance to E^G (absolute and relative) and the loss at
  the end of training against the weight decay λ.

The figures of §9b (balanced layers, angular momentum, tangent kernel) are drawn by
:mod:`mfsym.figures.noether_seed` through the same entry point.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..records import lineage
from ..records.results import read_dataset
from .noether_seed import FIGURES as SEED_FIGURES
from .style import apply_style, save_figure

#: Values at or below this are drawn on the floor of the log axes (exact zeros included).
LOG_FLOOR = 1e-18
ACTIVATION_COLORS = {"relu": "C0", "leaky_relu": "C1", "linear": "C2", "tanh": "0.45"}
MODE_STYLES = {
    "online": {"ls": "-", "marker": "o", "label": "online SGD"},
    "full_batch": {"ls": "--", "marker": "s", "label": "full-batch GD, raw set X"},
    "full_batch_symmetrized": {"ls": ":", "marker": "^", "label": "full-batch GD, X ∪ gX"},
}


DRIFT_LABEL = r"$\max_i |Q_i(s) - Q_i(0)|$"


def _floor(values) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=np.float64), LOG_FLOOR)


def _guide(ax, x, anchor_x, anchor_y, slope, label):
    """A power-law guide ``y = anchor_y (x / anchor_x)^slope``."""
    x = np.asarray(x, dtype=np.float64)
    ax.plot(x, anchor_y * (x / anchor_x) ** slope, color="k", ls=":", lw=1, label=label)


# ---------------------------------------------------------------------------------------
# fig_noether_drift
# ---------------------------------------------------------------------------------------
def _drift_panel(ax, ds: xr.Dataset, scheme: str) -> None:
    eta = ds.eta.values
    lows = []
    for act in ds.activation.values:
        for mode in ds.mode.values:
            y = ds.charge_drift.sel(activation=act, mode=mode, scheme=scheme).values
            st = MODE_STYLES[str(mode)]
            ax.loglog(eta, _floor(y), color=ACTIVATION_COLORS.get(str(act), "C4"), ls=st["ls"],
                      marker=st["marker"], ms=3.5, lw=1.3)
            if act != "tanh":
                lows.append(y[np.argmin(eta)])
    if "gram_charge_drift" in ds:
        for mode in ds.mode.values:
            y = ds.gram_charge_drift.sel(mode=mode, scheme=scheme).values
            ax.loglog(eta, _floor(y), color=ACTIVATION_COLORS["linear"], alpha=0.5, lw=3,
                      ls=MODE_STYLES[str(mode)]["ls"])
    if lows:
        _guide(ax, eta, eta.min(), 0.5 * min(lows), 1.0, None)
    slopes = ds.drift_slope.sel(scheme=scheme, mode=ds.mode.values[-1])
    text = "\n".join(
        f"{a}: {float(s):.2f}" for a, s in zip(ds.activation.values, slopes.values, strict=True)
    )
    ax.text(0.03, 0.86, f"slope ({ds.mode.values[-1]})\n{text}", transform=ax.transAxes,
            ha="left", va="top", fontsize="x-small",
            bbox={"fc": "white", "ec": "0.8", "alpha": 0.8})
    ax.set_title(scheme)
    ax.set_xticks(eta, [f"{e:g}" for e in eta], rotation=45)
    ax.minorticks_off()
    ax.set_xlabel("step size η = α/N")


def _drift_legend(fig, ds: xr.Dataset) -> None:
    handles = [Line2D([], [], color=ACTIVATION_COLORS.get(str(a), "C4"), label=str(a))
               for a in ds.activation.values]
    handles += [Line2D([], [], color="k", ls=MODE_STYLES[str(m)]["ls"],
                           marker=MODE_STYLES[str(m)]["marker"], ms=3.5,
                           label=MODE_STYLES[str(m)]["label"]) for m in ds.mode.values]
    if "gram_charge_drift" in ds:
        handles.append(Line2D([], [], color=ACTIVATION_COLORS["linear"], alpha=0.5, lw=3,
                                  label="linear: Gram charge VVᵀ − UUᵀ"))
    handles.append(Line2D([], [], color="k", ls=":", lw=1, label="slope 1 (in η)"))
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 5),
               fontsize="small", frameon=False)


def _decay_panel(ax, ds: xr.Dataset) -> None:
    for k, lam in enumerate(ds.decay_lambda.values):
        ax.scatter(ds.charge_decayed.values[k], ds.charge_final.values[k], s=12,
                   color=f"C{k}", label=f"λ = {lam:g}")
    lim = np.abs(ds.charge_initial.values).max() * 1.05
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.8, ls=":",
            label=r"$Q(s) = e^{-2\lambda s}\,Q(0)$")
    ax.set_xlabel(r"$e^{-2\lambda s}\,Q_i(0)$")
    ax.set_ylabel(r"$Q_i(s)$")
    ax.set_title(f"weight decay ({ds.attrs.get('decay_activation')}, "
                 f"{ds.attrs.get('decay_scheme')}, η = {ds.attrs.get('decay_eta')})")
    ax.legend(fontsize="x-small")


def _langevin_panel(ax, ds: xr.Dataset) -> None:
    beta, drift = ds.beta.values, ds.langevin_drift.values
    ax.loglog(beta, _floor(drift), "o-", color=ACTIVATION_COLORS.get(
        ds.attrs.get("langevin_activation"), "C0"),
        label=f"fitted slope {float(ds.langevin_slope):.2f}")
    _guide(ax, beta, beta[-1], drift[-1], 0.5, "slope 1/2 (in β)")
    ax.axhline(float(ds.noiseless_drift), color="0.5", ls="--", lw=1, label="β = 0")
    ax.set_xlabel("temperature β")
    ax.set_ylabel(DRIFT_LABEL)
    ax.set_title(f"Langevin noise ({ds.attrs.get('langevin_activation')}, "
                 f"{ds.attrs.get('langevin_scheme')}, η = {ds.attrs.get('langevin_eta')})")
    ax.legend(fontsize="x-small")


def drift_figure(ds: xr.Dataset) -> Figure:
    """``fig_noether_drift`` from the drift study's dataset (see the module docstring)."""
    schemes = list(ds.scheme.values)
    n = len(schemes)
    fig = Figure(figsize=(3.0 * max(n, 2), 7.0))
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.0, 1.0))
    axes = top.subplots(1, n, sharey=True, squeeze=False)[0]
    for ax, scheme in zip(axes, schemes, strict=True):
        _drift_panel(ax, ds, str(scheme))
    axes[0].set_ylabel(DRIFT_LABEL)
    decay_ax, langevin_ax = bottom.subplots(1, 2)
    _decay_panel(decay_ax, ds)
    _langevin_panel(langevin_ax, ds)
    _drift_legend(top, ds)
    return fig


# ---------------------------------------------------------------------------------------
# fig_finite_n_invariance
# ---------------------------------------------------------------------------------------
def invariance_figure(ds: xr.Dataset) -> Figure:
    """``fig_finite_n_invariance`` from the invariance study's dataset."""
    schemes = list(ds.scheme.values)
    rows = (("dist_fixed", r"distance to $E^G$ (SI start)"),
            ("pairing_error", "orbit-pairing error (paired start)"))
    fig = Figure(figsize=(2.8 * len(schemes), 5.6))
    axes = fig.subplots(2, len(schemes), sharex=True, sharey=True, squeeze=False)
    for r, (var, label) in enumerate(rows):
        for c, scheme in enumerate(schemes):
            ax = axes[r, c]
            for mode in ds.mode.values:
                st = MODE_STYLES[str(mode)]
                ax.semilogy(ds.time.values, _floor(ds[var].sel(scheme=scheme, mode=mode)),
                            ls=st["ls"], marker=st["marker"], ms=3, lw=1.3, label=st["label"])
            ax.axhline(np.finfo(np.float64).eps, color="0.6", lw=0.8, ls="-.")
            if r == 0:
                ax.set_title(str(scheme))
            else:
                ax.set_xlabel("flow time s = η · step")
        axes[r, 0].set_ylabel(label)
    axes[0, 0].set_ylim(LOG_FLOOR / 3, None)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.6", lw=0.8, ls="-."))
    labels.append("float64 machine epsilon")
    fig.legend(handles, labels, loc="outside upper center", ncol=len(labels), frameon=False,
               fontsize="small")
    return fig


# ---------------------------------------------------------------------------------------
# fig_weight_decay_attraction
# ---------------------------------------------------------------------------------------
def _lambda_axis(ax, lambdas) -> None:
    positive = lambdas[lambdas > 0]
    if positive.size:
        ax.set_xscale("symlog", linthresh=float(positive.min()))
    ax.set_xlim(0, float(lambdas.max()) * 1.5)
    ax.set_xlabel("weight decay λ = 2τ")


def attraction_figure(ds: xr.Dataset) -> Figure:
    """``fig_weight_decay_attraction`` from the attraction study's dataset."""
    lam = ds.decay_lambda.values
    final = ds.isel(time=-1)
    flow = float(ds.time.values[-1])
    panels = (
        (r"RMS distance to $E^G$", [("dist_fixed", "-", "o", "")], True),
        (r"RMD$(\nu, (P_E)_\#\nu)$ (relative)", [("rmd_projected", "-", "o", "")], False),
        ("loss", [("population_risk", "-", "o", " population risk"),
                  ("train_loss", "--", "s", " training loss")], True),
    )
    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 3)
    for ax, (ylabel, series, logy) in zip(axes, panels, strict=True):
        for k, scheme in enumerate(ds.scheme.values):
            for var, ls, marker, suffix in series:
                y = final[var].sel(scheme=scheme).values
                ax.plot(lam, _floor(y) if logy else y, ls=ls, marker=marker, ms=4,
                        color=f"C{k}", label=f"{scheme}{suffix}")
        if logy:
            ax.set_yscale("log")
        _lambda_axis(ax, lam)
        ax.set_ylabel(ylabel)
    start = float(ds.dist_fixed.isel(time=0).values.ravel()[0])
    axes[0].plot(lam, _floor(start * np.exp(-lam * flow)), color="k", ls=":", lw=1,
                 label=r"$e^{-\lambda s}\,\mathrm{dist}(0)$")
    for ax in axes:
        ax.legend(fontsize="x-small")
    fig.suptitle(f"from a generic start, {ds.attrs.get('teacher_kind')} teacher, "
                 f"flow time s = {flow:g}", fontsize="small")
    return fig


# ---------------------------------------------------------------------------------------
# one entry point for the figure rules
# ---------------------------------------------------------------------------------------
FIGURES = {
    "fig_noether_drift": drift_figure,
    "fig_finite_n_invariance": invariance_figure,
    "fig_weight_decay_attraction": attraction_figure,
    **SEED_FIGURES,
}


def noether_figure_job(
    name: str, dataset_path, figures_cfg: Mapping, outputs: Mapping, *,
    config: Mapping | None = None,
) -> None:
    """Read a study dataset, draw figure ``name`` and write ``outputs`` ({format: path}).

    ``figures_cfg`` is the ``figures:`` section (``context``, ``style``, ``dpi``); with
    ``config``, a study written under another ``noether`` section is refused.
    """
    if name not in FIGURES:
        raise ValueError(f"unknown Noether figure {name!r}; allowed: {sorted(FIGURES)}")
    apply_style(figures_cfg["context"], figures_cfg["style"])
    study = read_dataset(dataset_path, config, lineage.NOETHER)
    save_figure(FIGURES[name](study), outputs, figures_cfg["dpi"])
