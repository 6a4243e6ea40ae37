"""The discovery heuristic's figure (PAPER.md §6–7): fig_heuristic.

One row per setting of ``heuristic.nc``.  Columns j = 0, 1, …: the particles after the
free training of step j, seen in the plane of the first two directions of E^G (the E^G
basis, completed by its orthogonal complement when dim E^G < 2); the start on E_j in grey,
the trained particles coloured by their distance ‖θ − P_{E_j} θ‖ from E_j (log colour
scale, shared by the whole figure).  E_j is drawn in that plane: a cross at the origin
when it is {0} (or orthogonal to the plane), a line when its image is a line, a shaded
panel when it contains the whole plane.  Last column: the diagnostic per step —
RMD(ν, (P_{E_j})#ν) (the stopping statistic), RMD(ν, ν^G) and the threshold d_j, on a
log axis showing RMD (not RMD²); values below ``log_floor`` are drawn at the floor.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.colors import LogNorm

from ..records import lineage
from ..records.results import read_dataset
from .particles import complement_basis
from .style import apply_style, save_figure

#: Singular values of the image of E_j in the view plane below this count as zero.
VIEW_RANK_TOL = 1e-6


def view_basis(fixed_basis: np.ndarray) -> np.ndarray:
    """(D, 2): the first two E^G directions, completed by complement directions if needed."""
    full = np.concatenate([fixed_basis, complement_basis(fixed_basis)], axis=1)
    return full[:, :2]


def distance_from(cloud: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """‖θᵢ − B Bᵀ θᵢ‖ for every particle, shape (N,)."""
    return np.linalg.norm(cloud - cloud @ basis @ basis.T, axis=1)


def _draw_subspace(ax, image: np.ndarray, dim: int) -> str:
    """Draw span of ``image`` (2, k), the view of E_j; return a short description."""
    if image.shape[1]:
        u, s, _ = np.linalg.svd(image, full_matrices=False)
        rank = int(np.sum(s > VIEW_RANK_TOL))
    else:
        rank = 0
    if rank >= 2:
        ax.set_facecolor((0.85, 0.85, 0.85))
        return f"$E_j$ (dim {dim}) ⊇ this plane"
    if rank == 1:
        ax.axline((0.0, 0.0), (u[0, 0], u[1, 0]), color="k", lw=1.2, ls="--")
        return f"$E_j$ (dim {dim}) dashed"
    ax.plot([0.0], [0.0], marker="x", color="k", ms=9, mew=2)
    return f"$E_j$ (dim {dim}) at ×"


def _setting_arrays(ds: xr.Dataset, setting: str):
    one = ds.sel(setting=setting)
    d, n = int(one["dim_z"]), int(one["n_particles"])
    fixed = one["fixed_basis"].values[:d, : int(one["true_dim"])]
    return one, d, n, fixed


def _particle_panel(ax, one, step: int, d: int, n: int, view: np.ndarray, norm):
    st = one.sel(step=step)
    k = int(st["subspace_dim"])
    basis = st["basis"].values[:d, :k]
    start = st["initial_particles"].values[:n, :d] @ view
    trained = st["trained_particles"].values[:n, :d]
    xy = trained @ view
    dist = np.maximum(distance_from(trained, basis), norm.vmin)
    what = _draw_subspace(ax, view.T @ basis, k)
    ax.scatter(start[:, 0], start[:, 1], s=6, color="0.6", alpha=0.6, lw=0)
    sc = ax.scatter(xy[:, 0], xy[:, 1], s=8, c=dist, cmap="viridis", norm=norm, lw=0)
    ax.set_title(f"step {step}: {what}\n"
                 rf"RMD$(\nu, (P_{{E_j}})_\#\nu)$ = {float(st['rmd_projected']):.3g}, "
                 f"$d_j$ = {float(st['threshold']):.3g}", fontsize="small")
    ax.set_aspect("equal", adjustable="datalim")
    return sc


def _diagnostic_panel(ax, one, steps: int, floor: float) -> None:
    j = np.arange(steps)
    st = one.isel(step=slice(0, steps))
    for var, label, style in (
        ("rmd_projected", r"RMD$(\nu, (P_{E_j})_\#\nu)$", "o-"),
        ("rmd_symmetrized", r"RMD$(\nu, \nu^G)$", "s:"),
        ("threshold", r"threshold $d_j$", "k_--"),
    ):
        ax.plot(j, np.maximum(st[var].values, floor), style, label=label, ms=6)
    ax.set_yscale("log")
    ax.set_xticks(j)
    ax.set_xlabel("step j")
    ax.set_ylabel("RMD")
    ax.set_title(f"recovered dim {int(one['recovered_dim'])} (dim $E^G$ = "
                 f"{int(one['true_dim'])}), largest angle "
                 f"{np.degrees(float(one['max_principal_angle'])):.2g}°", fontsize="small")
    ax.legend(fontsize="x-small", loc="best")


def plot_heuristic(ds: xr.Dataset, log_floor: float = 1e-6):
    """The heuristic figure (see the module docstring); returns the Figure."""
    settings = [str(s) for s in ds["setting"].values]
    n_steps = {s: int(ds["n_steps"].sel(setting=s)) for s in settings}
    cols = max(n_steps.values()) + 1
    fig, axes = plt.subplots(len(settings), cols, figsize=(3.1 * cols, 3.0 * len(settings)),
                             squeeze=False)
    dists = []
    for s in settings:
        one, d, n, _ = _setting_arrays(ds, s)
        for j in range(n_steps[s]):
            st = one.sel(step=j)
            basis = st["basis"].values[:d, : int(st["subspace_dim"])]
            dists.append(distance_from(st["trained_particles"].values[:n, :d], basis))
    top = max(float(np.max(np.concatenate(dists))), 10 * log_floor)
    norm = LogNorm(vmin=max(log_floor, top * 1e-4), vmax=top)
    sc = None
    for r, s in enumerate(settings):
        one, d, n, fixed = _setting_arrays(ds, s)
        view = view_basis(fixed)
        for j in range(cols - 1):
            if j < n_steps[s]:
                sc = _particle_panel(axes[r, j], one, j, d, n, view, norm)
            else:
                axes[r, j].axis("off")
        axes[r, 0].set_ylabel(f"{s}\n" + r"coordinate on $e_2$")
        for j in range(n_steps[s]):
            axes[r, j].set_xlabel(r"coordinate on $e_1$")
        _diagnostic_panel(axes[r, -1], one, n_steps[s], log_floor)
    if sc is not None:
        fig.colorbar(sc, ax=axes[:, :-1].ravel().tolist(), shrink=0.8,
                     label=r"distance from $E_j$, $\|\theta - P_{E_j}\theta\|$")
    fig.suptitle("SI-subspace discovery: trained particles per step (grey: start on $E_j$) "
                 "and the stopping diagnostic")
    return fig


def heuristic_job(
    heuristic_path, figures_cfg: Mapping, outputs: Mapping, *, config: Mapping | None = None
) -> None:
    """Read heuristic.nc, draw :func:`plot_heuristic` and write ``outputs`` ({format: path}).

    With ``config``, a heuristic.nc written under another configuration is refused."""
    apply_style(figures_cfg["context"], figures_cfg["style"])
    heuristic = read_dataset(heuristic_path, config, lineage.HEURISTIC)
    fig = plot_heuristic(heuristic, figures_cfg["log_floor"])
    save_figure(fig, outputs, figures_cfg["dpi"])
