"""What the pipeline builds, read from the configuration alone.

The figure names (one RMD figure per initialisation, one particle figure per teacher, the
loss curves, the heuristic and the Noether figures) are defined here once; the rule files
name their rules after them and ``rule all`` / ``rule grid`` take their inputs from
:func:`final_targets` / :func:`grid_targets`. The manuscript (``snakemake paper``) is not a
final target: the rest of the pipeline needs no LaTeX.
"""

from __future__ import annotations

from collections.abc import Mapping

LOSS_CURVES_FIGURE = "fig_loss_curves"
HEURISTIC_FIGURE = "fig_heuristic"
#: Noether study (noether/<study>.nc) → the figure drawn from it
NOETHER_FIGURES = {
    "drift": "fig_noether_drift",
    "invariance": "fig_finite_n_invariance",
    "attraction": "fig_weight_decay_attraction",
    "balance": "fig_layer_balance",
    "momentum": "fig_angular_momentum",
    "tangent": "fig_tangent_kernel",
}
FIGURE_FORMATS = ("pdf", "png")
#: Deep stage (PAPER.md §10) → its pipeline rule; each writes deep/<stage>.nc.
DEEP_RULES = {"mlp": "deep_units", "resnet": "resnet"}
#: The rotation stage (PAPER.md §11): FA_K against K.
FA_QUADRATURE_FIGURE = "fig_fa_quadrature"
ROTATION_DIR = "rotation"
#: The saddle study (PAPER.md §12): its run files under saddle/, its dataset and figure.
SADDLE_DIR = "saddle"
SADDLE_DATASET = "saddle.nc"
SADDLE_FIGURE = "fig_saddle_escape"
#: The stages ``rule all`` may build (the configuration's ``stages``; absent: every stage
#: but ``claims``, whose table the manuscript build writes anyway).
STAGES = ("grid", "heuristic", "noether", "deep", "rotation", "saddle", "claims")
DEFAULT_STAGES = STAGES[:-1]
#: The claims table of a study without the manuscript: grid and heuristic rows.
CLAIMS_DIR = "claims"
#: Output name of the claims rule → file under claims/.
CLAIMS_FILES = {"claims": "claims.json", "table": "claims.tex", "markdown": "claims.md",
                "macros": "numbers.tex"}


def rmd_figure(init: str) -> str:
    """The RMD-vs-N figure of one initialisation, e.g. ``fig_rmd_si_init``."""
    return f"fig_rmd_{init.lower()}_init"


def particles_figure(teacher: str) -> str:
    """The particle figure of one teacher, e.g. ``fig_particles_arbitrary``."""
    return f"fig_particles_{teacher.lower()}"


def deep_figure(stage: str, init: str) -> str:
    """The RMD figure of a deep stage, e.g. ``fig_resnet_rmd_si_init``."""
    return f"fig_{stage}_rmd_{init.lower()}_init"


def deep_figures(config: Mapping) -> list[str]:
    """Every deep figure: one per stage and initialisation of the ``deep`` section."""
    return [deep_figure(stage, init) for stage in DEEP_RULES for init in config["deep"]["inits"]]
def rotation_rmd_figure(group: str, init: str) -> str:
    """The rotation stage's RMD-vs-N figure, e.g. ``fig_rmd_so2_si_init``."""
    return f"fig_rmd_{group.lower()}_{init.lower()}_init"


def rotation_figures(config: Mapping) -> list[str]:
    """Names of the rotation stage's figures (none without a ``rotation`` section)."""
    section = config.get("rotation")
    if not section:
        return []
    group = section["group"]["name"]
    return [*(rotation_rmd_figure(group, init) for init in section["inits"]),
            FA_QUADRATURE_FIGURE]


def rotation_targets(config: Mapping) -> list[str]:
    """The rotation stage's datasets and figures (``snakemake rotation``)."""
    if not config.get("rotation"):
        return []
    results = config["results_dir"]
    return [
        f"{results}/{ROTATION_DIR}/summary.nc",
        f"{results}/{ROTATION_DIR}/quadrature.nc",
        *(f for name in rotation_figures(config) for f in figure_files(results, name)),
    ]


def saddle_figures(config: Mapping) -> list[str]:
    """Names of the saddle study's figures (none without a ``saddle`` section)."""
    return [SADDLE_FIGURE] if config.get("saddle") else []


def saddle_targets(config: Mapping) -> list[str]:
    """The saddle study's dataset and figure (``snakemake saddle``)."""
    if not config.get("saddle"):
        return []
    results = config["results_dir"]
    return [f"{results}/{SADDLE_DATASET}",
            *(f for name in saddle_figures(config) for f in figure_files(results, name))]


def figure_files(results_dir: str, name: str) -> list[str]:
    """The PDF and PNG of figure ``name`` under ``results_dir``/figures/."""
    return [f"{results_dir}/figures/{name}.{ext}" for ext in FIGURE_FORMATS]


def grid_figures(config: Mapping) -> list[str]:
    """Names of the figures drawn from the training grid, in build order."""
    return [
        *(rmd_figure(init) for init in config["inits"]),
        *(particles_figure(teacher) for teacher in config["teachers"]),
        LOSS_CURVES_FIGURE,
    ]


def grid_targets(config: Mapping) -> list[str]:
    """summary.nc and the files of every grid figure (``snakemake grid``)."""
    results = config["results_dir"]
    figures = [f for name in grid_figures(config) for f in figure_files(results, name)]
    return [f"{results}/summary.nc", *figures]


def stages(config: Mapping) -> tuple[str, ...]:
    """The stages ``rule all`` builds: ``config["stages"]`` or :data:`DEFAULT_STAGES`."""
    return tuple(config.get("stages") or DEFAULT_STAGES)


def claims_targets(config: Mapping) -> list[str]:
    """The study's claims table (``snakemake claims``): ``claims/`` under results_dir."""
    return [f"{config['results_dir']}/{CLAIMS_DIR}/{name}" for name in CLAIMS_FILES.values()]


def final_targets(config: Mapping) -> list[str]:
    """Everything the default run builds, stage by stage (:func:`stages`): the grid
    targets, heuristic.nc and its figure, the figure of every Noether study (which pulls
    in the study's file), the deep stages' figures (which pull in deep/<stage>.nc), the
    rotation stage's and the saddle study's targets, and the study's claims table."""
    results = config["results_dir"]
    chosen = stages(config)
    parts = {
        "grid": grid_targets(config),
        "heuristic": [f"{results}/heuristic.nc", *figure_files(results, HEURISTIC_FIGURE)],
        "noether": [f for name in NOETHER_FIGURES.values() for f in figure_files(results, name)],
        "deep": [f for name in deep_figures(config) for f in figure_files(results, name)],
        "rotation": rotation_targets(config),
        "saddle": saddle_targets(config),
        "claims": claims_targets(config),
    }
    return [path for stage in STAGES if stage in chosen for path in parts[stage]]
