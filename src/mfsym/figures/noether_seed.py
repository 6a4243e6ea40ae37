"""Figures of the rest of the Noether seed (PAPER.md §9b); they read the study datasets only.

* ``fig_layer_balance`` — (a) the largest one-step change of the per-neuron balance
  ``|row_k W₁|² − |col_k W₂|²`` against η (log-log) per activation, the linear unit's whole
  matrix, the linear ResNet's ``D_l`` and its raw-mean control, with slope-2 and slope-1
  guides; (b) mean ``‖W₁‖²`` (solid) and ``‖W₂‖²`` (dashed) over a training run; (c) the
  largest drift of the balance over that run.
* ``fig_angular_momentum`` — (a) ``max_t |J| / scale`` against K for the C_K-augmented
  loss, the raw set at K = 1 and the orbit-averaged loss as a line; (b) ``|J(t)| / scale``
  over flow time for the three cases.
* ``fig_tangent_kernel`` — (a) the energy identity's relative defect against η (slope-1
  guide); (b) the tangent kernel's relative movement against N, mean-field and NTK
  scalings, with N^0, N^{-1/2} and N^{-1} guides; (c) the particles' relative movement.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

LOG_FLOOR = 1e-18
ACTIVATION_COLORS = {"relu": "C0", "leaky_relu": "C1", "linear": "C2", "tanh": "0.45",
                     "sigmoid": "C3"}
SCALING_STYLES = {"mean_field": ("C0", "o", "mean-field: (1/N) Σ, step α/N"),
                  "ntk": ("C3", "s", "NTK: (1/√N) Σ, step independent of N")}
CASE_STYLES = {"raw": ("C3", "raw set X"), "augmented": ("C0", "C_K-augmented"),
               "population": ("k", "orbit-averaged (population)")}


def _floor(values) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=np.float64), LOG_FLOOR)


def _guide(ax, x, y0, slope, label, ls=":"):
    """A power law through ``(x[0], y0)`` with the given slope."""
    x = np.asarray(x, dtype=np.float64)
    ax.plot(x, y0 * (x / x[0]) ** slope, color="k", ls=ls, lw=1, label=label)


# ---------------------------------------------------------------------------------------
# fig_layer_balance
# ---------------------------------------------------------------------------------------
def _step_panel(ax, ds: xr.Dataset) -> None:
    eta = ds.eta.values
    for act in ds.activation.values:
        y = ds.step_change.sel(activation=act).values
        slope = float(ds.step_change_slope.sel(activation=act))
        ax.loglog(eta, _floor(y), marker="o", ms=4, color=ACTIVATION_COLORS.get(str(act), "C4"),
                  label=f"mlp {act} (slope {slope:.2f})")
    if "matrix_step_change" in ds:
        ax.loglog(eta, _floor(ds.matrix_step_change.values), marker="^", ms=4, ls="--",
                  color=ACTIVATION_COLORS["linear"], label="mlp linear, whole W₁W₁ᵀ − W₂ᵀW₂")
    ax.loglog(eta, _floor(ds.resnet_step_change.values), marker="D", ms=4, color="C5",
              label=f"ResNet D_l (slope {float(ds.resnet_step_change_slope):.2f})")
    ax.loglog(eta, _floor(ds.resnet_mean_balance_change.values), marker="x", ms=5, ls="--",
              color="C5", label=f"ResNet raw means, control "
                                f"(slope {float(ds.resnet_mean_balance_slope):.2f})")
    order = np.argsort(eta)
    low = float(ds.resnet_step_change.values[order][0])
    _guide(ax, eta[order], low * 0.2, 2, "slope 2")
    _guide(ax, eta[order], float(ds.step_change.values[:, order[0]].max()) * 3, 1, "slope 1",
           "-.")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step η")
    ax.set_ylabel("largest change in one step")
    ax.set_title("(a) one step: O(η²) where the balance holds", fontsize="small")
    ax.legend(fontsize="xx-small")


def _run_panels(ax_norm, ax_drift, ds: xr.Dataset) -> None:
    t = ds.time.values
    for act in ds.activation.values:
        c = ACTIVATION_COLORS.get(str(act), "C4")
        ax_norm.plot(t, ds.norm_first.sel(activation=act), color=c, label=f"{act}: ‖W₁‖²")
        ax_norm.plot(t, ds.norm_second.sel(activation=act), color=c, ls="--",
                     label=f"{act}: ‖W₂‖²")
        ax_drift.semilogy(t[1:], _floor(ds.balance_drift.sel(activation=act).values[1:]),
                          color=c, label=str(act))
    ax_norm.set_xlabel("flow time s")
    ax_norm.set_ylabel("mean over particles")
    ax_norm.set_title(f"(b) layer norms, η = {ds.attrs.get('run_eta')}", fontsize="small")
    ax_norm.legend(fontsize="xx-small", ncol=2)
    ax_drift.set_xlabel("flow time s")
    ax_drift.set_ylabel(r"$\max_{i,k} |b_{ik}(s) - b_{ik}(0)|$")
    ax_drift.set_title("(c) drift of the per-neuron balance", fontsize="small")
    ax_drift.legend(fontsize="x-small")


def balance_figure(ds: xr.Dataset) -> Figure:
    """``fig_layer_balance`` from the balance study's dataset."""
    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, 3)
    _step_panel(axes[0], ds)
    _run_panels(axes[1], axes[2], ds)
    fig.suptitle(f"balanced layers: mlp unit, h = {ds.attrs.get('hidden')}, "
                 f"N = {ds.attrs.get('n_particles')}; linear ResNet L = "
                 f"{ds.attrs.get('resnet_depth')}, M = {ds.attrs.get('resnet_per_layer')}; "
                 "full-batch GD, float64", fontsize="small")
    return fig


# ---------------------------------------------------------------------------------------
# fig_angular_momentum
# ---------------------------------------------------------------------------------------
def momentum_figure(ds: xr.Dataset) -> Figure:
    """``fig_angular_momentum`` from the momentum study's dataset."""
    fig = Figure(figsize=(10, 4))
    ax_k, ax_t = fig.subplots(1, 2)
    ks = ds.K.values
    ax_k.semilogy(ks, _floor(ds.j_rel_max.values), marker="o", ms=4, color="C0",
                  label="C_K-augmented set")
    ax_k.semilogy([ks[0]], _floor([float(ds.j_rel_max.values[0])]), marker="s", ms=8,
                  ls="none", mfc="none", color="C3", label="K = 1: raw set")
    pop = float(ds.j_rel_population_max)
    ax_k.axhline(max(pop, LOG_FLOOR), color="k", ls=":",
                 label=f"orbit-averaged ({ds.attrs.get('population_points')} points)")
    ax_k.axhline(np.finfo(np.float64).eps, color="0.6", lw=0.8, ls="--", label="float64 ε")
    ax_k.set_xscale("log", base=2)
    ax_k.set_xlabel("orbit points K")
    ax_k.set_ylabel(r"$\max_t |J| \,/\, \sum_i |A\theta_i|\,|\nabla_i L|$")
    ax_k.set_title("(a) angular momentum against K", fontsize="small")
    ax_k.legend(fontsize="x-small")
    t = ds.time.values
    for case, k in zip(ds.case.values, ds.case_points.values, strict=True):
        color, label = CASE_STYLES.get(str(case), ("C4", str(case)))
        suffix = f" (K = {int(k)})" if case == "augmented" else ""
        ax_t.semilogy(t, _floor(np.abs(ds.j_rel.sel(case=case).values)), color=color,
                      label=label + suffix)
    ax_t.set_xlabel("flow time s")
    ax_t.set_ylabel("|J(t)| / scale")
    ax_t.set_title("(b) along full-batch gradient descent", fontsize="small")
    ax_t.legend(fontsize="x-small")
    fig.suptitle(f"{ds.attrs.get('group')}, uv unit ({ds.attrs.get('activation')}), SI "
                 f"teacher, N = {ds.attrs.get('n_particles')}, n = "
                 f"{ds.attrs.get('train_size')}, float64", fontsize="small")
    return fig


# ---------------------------------------------------------------------------------------
# fig_tangent_kernel
# ---------------------------------------------------------------------------------------
def _n_panel(ax, ds: xr.Dataset, var: str, title: str, guides) -> None:
    n = ds.N.values
    for scaling in ds.scaling.values:
        color, marker, label = SCALING_STYLES.get(str(scaling), ("C4", "o", str(scaling)))
        y = ds[var].sel(scaling=scaling).values
        slope = float(ds[f"{var}_slope"].sel(scaling=scaling))
        ax.loglog(n, _floor(y), color=color, marker=marker, ms=4,
                  label=f"{label} (slope {slope:.2f})")
    top = float(ds[var].sel(scaling="ntk").values[0]) if "ntk" in ds.scaling else 1.0
    for slope, ls in guides:
        _guide(ax, n, top, slope, f"N^{slope:g}", ls)
    ax.set_xlabel("particles N")
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_title(title, fontsize="small")
    ax.legend(fontsize="xx-small")


def tangent_figure(ds: xr.Dataset) -> Figure:
    """``fig_tangent_kernel`` from the tangent study's dataset."""
    fig = Figure(figsize=(13, 4))
    ax_e, ax_k, ax_p = fig.subplots(1, 3)
    eta = ds.eta.values
    ax_e.loglog(eta, _floor(ds.energy_defect.values), marker="o", ms=4, color="C0",
                label=f"defect (slope {float(ds.energy_defect_slope):.2f})")
    order = np.argsort(eta)
    _guide(ax_e, eta[order], 0.5 * float(ds.energy_defect.values[order][0]), 1, "slope 1")
    ax_e.xaxis.set_minor_formatter(NullFormatter())
    ax_e.set_xlabel("step η")
    ax_e.set_ylabel(r"$\max_k |\Delta L/\eta + \frac{4}{n^2} r^\top K r| \,/\, "
                    r"\max_k \frac{4}{n^2} r^\top K r$")
    ax_e.set_title("(a) energy identity dL/ds = −(4/n²) rᵀK r", fontsize="small")
    ax_e.legend(fontsize="x-small")
    _n_panel(ax_k, ds, "kernel_movement", "(b) ‖K_T − K_0‖ / ‖K_0‖",
             ((-0.5, ":"), (-1.0, "-.")))
    ax_k.set_ylabel("relative kernel movement")
    _n_panel(ax_p, ds, "particle_movement", "(c) particles: RMS |θ(T) − θ(0)| / RMS |θ(0)|",
             ((-0.5, ":"),))
    ax_p.set_ylabel("relative particle movement")
    fig.suptitle(f"uv unit ({ds.attrs.get('activation')}), full-batch GD on n = "
                 f"{ds.attrs.get('train_size')} points, function time "
                 f"{ds.attrs.get('function_time')}, float64", fontsize="small")
    return fig


#: Figure name → drawing function (registered with the Noether figure rules).
FIGURES = {
    "fig_layer_balance": balance_figure,
    "fig_angular_momentum": momentum_figure,
    "fig_tangent_kernel": tangent_figure,
}
