"""RMD figures of the deep settings (PAPER.md §10): fig_mlp_rmd_<init>_init and
fig_resnet_rmd_<init>_init.

The layout of ``fig_rmd_si_init`` (:func:`mfsym.figures.rmd.plot_rmd`): columns are the
teachers; row 1 the distance of the trained cloud from the invariant laws (RMD to the
projection on E^G for an SI start, to the symmetrisation for a WI start) against the size,
one line per scheme; rows 2–3 the RMD between schemes and to EA.  The mlp figure's x axis
is N; the ResNet's is M, the particles per layer, with one line style per depth L.  Its
RMDs are pooled over layers (:mod:`mfsym.measure.layers`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..records import lineage
from ..records.results import read_dataset
from .rmd import plot_rmd
from .style import apply_style, save_figure

#: stage → (x axis, line axis, x label)
AXES = {
    "mlp": ("N", None, "N (mlp units)"),
    "resnet": ("M", "depth", "M (particles per layer)"),
}


def plot_deep_rmd(ds, stage: str, init: str, figures_cfg: Mapping):
    """The RMD figure of one deep stage and initialisation; returns the Figure."""
    if stage not in AXES:
        raise ValueError(f"unknown deep stage {stage!r}; allowed: {list(AXES)}")
    size_dim, line_dim, label = AXES[stage]
    fig = plot_rmd(ds, init, figures_cfg["quantity"], figures_cfg["spread"],
                   figures_cfg["log_floor"], size_dim=size_dim, line_dim=line_dim,
                   size_label=label, title_prefix=f"{stage}: ")
    return fig


def deep_rmd_job(dataset_path, stage: str, init: str, figures_cfg: Mapping, outputs: Mapping,
                 *, config: Mapping | None = None) -> None:
    """Read ``deep/<stage>.nc``, draw :func:`plot_deep_rmd`, write ``outputs``; with
    ``config`` a dataset written under another configuration is refused."""
    apply_style(figures_cfg["context"], figures_cfg["style"])
    ds = read_dataset(dataset_path, config, lineage.deep_stage(stage))
    save_figure(plot_deep_rmd(ds, stage, init, figures_cfg), outputs, figures_cfg["dpi"])
