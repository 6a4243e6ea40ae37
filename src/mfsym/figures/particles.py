"""Particle figures (PAPER.md §6): fig_particles_<teacher>.

One seed, the schemes side by side (columns).  Teacher particles are squares, the trained
students dots.  Row 1: a 3-D view of coordinates z₀, z₁, z₂ with z₃ (when D ≥ 4) as colour
and E^G drawn as the plane (or line) its image spans in those coordinates.  Row 2: the view
along E^G: the particles projected on the orthogonal complement of E^G (first two
directions of an orthonormal basis), where E^G collapses to the origin, so a cloud that
stayed on E^G is a single point there; each panel states the students' RMS distance to E^G,
(mean_i ‖θᵢ − P_E θᵢ‖²)^{1/2}.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from ..core.teachers import read_teachers
from ..records import lineage
from ..records.results import read_dataset
from .style import apply_style, save_figure, scheme_colors


def complement_basis(basis: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``(D, D − k)`` of the orthogonal complement of ``basis`` ``(D, k)``."""
    d, k = basis.shape
    proj = np.eye(d) - basis @ basis.T
    vals, vecs = np.linalg.eigh(proj)
    return vecs[:, vals > 0.5][:, ::-1]


def view_coordinates(cloud: np.ndarray, basis: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """2-D coordinates of ``cloud`` ``(N, D)`` seen along E^G, and their axis labels.

    Complement coordinates ``cloud @ C[:, :2]``; with a 1-dimensional complement the second
    axis is the first E^G coordinate; with E^G = Z, the first two E^G coordinates.
    """
    comp = complement_basis(basis)
    axes = [(comp[:, i], f"$e^\\perp_{i + 1}$") for i in range(min(2, comp.shape[1]))]
    axes += [(basis[:, i], f"$e_{i + 1}$ (in $E^G$)") for i in range(basis.shape[1])]
    axes = axes[:2]
    mat = np.stack([a for a, _ in axes], axis=1)
    return cloud @ mat, [label for _, label in axes]


def _draw_subspace(ax, basis: np.ndarray, extent: float) -> None:
    """Draw span(basis[:3]) in the 3-D axes: a plane (rank 2), a line (rank 1)."""
    image = basis[:3]
    u, s, _ = np.linalg.svd(image, full_matrices=False)
    dirs = u[:, s > 1e-9]
    t = np.linspace(-extent, extent, 2)
    if dirs.shape[1] >= 2:
        a, b = np.meshgrid(t, t)
        pts = a[..., None] * dirs[:, 0] + b[..., None] * dirs[:, 1]
        ax.plot_surface(pts[..., 0], pts[..., 1], pts[..., 2], color="grey", alpha=0.18,
                        linewidth=0, shade=False)
    elif dirs.shape[1] == 1:
        pts = t[:, None] * dirs[:, 0]
        ax.plot(pts[:, 0], pts[:, 1], pts[:, 2], color="grey", lw=1.5)


def _colour(cloud: np.ndarray, norm, fallback) -> dict:
    """Scatter colour keywords: z₃ on a shared colour scale when D ≥ 4, else ``fallback``."""
    if norm is None:
        return {"color": fallback}
    return {"c": cloud[:, 3], "cmap": "viridis", "norm": norm}


def plot_particles(
    runs: xr.Dataset, teacher_cloud: np.ndarray, basis: np.ndarray, teacher: str, seed: int
):
    """The particle figure of one teacher and seed (see the module docstring)."""
    if teacher not in runs["teacher"].values or seed not in runs["seed"].values:
        raise ValueError(
            f"no run for teacher={teacher!r}, seed={seed} here (teachers "
            f"{list(runs['teacher'].values)}, seeds {list(runs['seed'].values)})"
        )
    final = runs["final_particles"].sel(teacher=teacher, seed=seed)
    schemes = list(runs["scheme"].values)
    d = final.sizes["coord"]
    if d < 3:
        raise ValueError(f"particle figures need D ≥ 3 coordinates, got D={d}")
    clouds = {s: final.sel(scheme=s).transpose("particle", "coord").values for s in schemes}
    every = np.concatenate([*clouds.values(), teacher_cloud])
    extent = float(np.abs(every[:, :3]).max()) * 1.05
    norm = plt.Normalize(every[:, 3].min(), every[:, 3].max()) if d >= 4 else None
    colors = scheme_colors(schemes)
    fig = plt.figure(figsize=(3.3 * len(schemes), 6.6))
    view_t, labels = view_coordinates(teacher_cloud, basis)
    lim = float(np.abs(np.concatenate([view_coordinates(c, basis)[0] for c in clouds.values()]
                                      + [view_t])).max()) * 1.1 or 1.0
    mappable = None
    for c, scheme in enumerate(schemes):
        cloud = clouds[scheme]
        ax = fig.add_subplot(2, len(schemes), c + 1, projection="3d")
        _draw_subspace(ax, basis, extent)
        mappable = ax.scatter(cloud[:, 0], cloud[:, 1], cloud[:, 2], s=6, alpha=0.7,
                              **_colour(cloud, norm, colors[scheme]))
        ax.scatter(teacher_cloud[:, 0], teacher_cloud[:, 1], teacher_cloud[:, 2], marker="s",
                   s=40, edgecolors="black", linewidths=0.8,
                   **_colour(teacher_cloud, norm, "black"))
        ax.set_title(f"{scheme}", color=colors[scheme])
        ax.set_xlabel("$z_0$")
        ax.set_ylabel("$z_1$")
        ax.set_zlabel("$z_2$")
        for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            setter(-extent, extent)
        ax2 = fig.add_subplot(2, len(schemes), len(schemes) + c + 1)
        view, _ = view_coordinates(cloud, basis)
        ax2.scatter(view[:, 0], view[:, 1], s=5, alpha=0.5, color=colors[scheme],
                    label="student")
        ax2.scatter(view_t[:, 0], view_t[:, 1], marker="s", s=36, facecolors="none",
                    edgecolors="black", label="teacher")
        ax2.scatter([0], [0], marker="+", s=80, color="grey", label="$E^G$")
        resid = cloud - cloud @ basis @ basis.T
        ax2.text(0.98, 0.02, f"RMS distance to $E^G$: {np.sqrt((resid**2).sum(1).mean()):.1e}",
                 transform=ax2.transAxes, ha="right", va="bottom", fontsize="x-small")
        ax2.set_xlim(-lim, lim)
        ax2.set_ylim(-lim, lim)
        ax2.set_aspect("equal")
        ax2.set_xlabel(labels[0])
        ax2.set_ylabel(labels[1])
        if c == 0:
            ax2.legend(fontsize="x-small", loc="upper left")
    if d >= 4 and mappable is not None:
        fig.colorbar(mappable, ax=fig.axes[0::2], shrink=0.35, label="$z_3$", location="top")
    fig.suptitle(f"teacher {teacher}, N = {runs.attrs['N']}, {runs.attrs['init']} start, "
                 f"seed {seed}: 3-D view (top), view along $E^G$ (bottom)")
    return fig


def particles_job(
    runs_path, teachers_path, teacher: str, seed: int, figures_cfg: Mapping, outputs: Mapping,
    *, config: Mapping | None = None,
) -> None:
    """Read a run file and the teachers file (clouds and the basis of E^G), draw
    :func:`plot_particles`, write ``outputs``. With ``config``, either file written under
    another configuration (where it determines that file) is refused."""
    apply_style(figures_cfg["context"], figures_cfg["style"])
    teachers_ds = read_dataset(teachers_path, config, lineage.TEACHERS)
    teachers = read_teachers(teachers_ds)
    if teacher not in teachers:
        raise ValueError(f"unknown teacher {teacher!r}; available: {sorted(teachers)}")
    fig = plot_particles(read_dataset(runs_path, config, lineage.RUNS), teachers[teacher].particles,
                         teachers_ds["fixed_basis"].values, teacher, int(seed))
    save_figure(fig, outputs, figures_cfg["dpi"])
