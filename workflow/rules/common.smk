# Shared helpers for the rule files. What `rule all` builds comes from the configuration
# alone (mfsym.pipeline.targets.final_targets), not from the rule files.
import json

# ---- the paper grid: one training job per (init, N, seed block) ---------------------------
from mfsym.pipeline import targets
from mfsym.pipeline.config import canonical, grid_of, particles_n
from mfsym.pipeline.rate_timers import cancel_pending_timers

RESULTS = config["results_dir"]
GRID = grid_of(config)  # checks across keys (group/unit/teachers/pairs/figures) first
# Rule params come from CFG (keys sorted), so reordering config keys reruns nothing.
CFG = canonical(config)
JOB = "{init}/N{N}/{block}"
# Scheduling order on a busy machine: the grid's training and the heuristic's chain of
# steps (each step waits for the one before) are the longest chains of the run, so their
# jobs start before the shorter stages (rotation, Noether, deep, figures).
PRIORITY = {"data": 30, "heuristic": 25, "train": 20, "metrics": 10}


# The run is over: Snakemake's pending rate-limit timers would hold the command's exit for
# up to one --max-jobs-per-timespan timespan (mfsym.pipeline.rate_timers).
onsuccess:
    cancel_pending_timers()


onerror:
    cancel_pending_timers()


wildcard_constraints:
    init="|".join(GRID.inits),
    N=r"[0-9]+",
    block=r"b[0-9]+",


def grid_paths(pattern):
    """``pattern`` (with {init}, {N}, {block}) for every training job of the grid."""
    return [pattern.format(init=i, N=n, block=b) for i, n, b in GRID.jobs()]


def figure_files(name):
    """The PDF and PNG of figure ``name`` under figures/."""
    return targets.figure_files(RESULTS, name)


def figure_outputs(name, category):
    """Named outputs of a figure rule; the PNG goes into the report with its caption
    (workflow/report/<name>.rst)."""
    pdf, png = figure_files(name)
    return {
        "pdf": pdf,
        "png": report(png, caption=f"../report/{name}.rst", category=category),
    }
