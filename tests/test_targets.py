"""The final targets come from the configuration alone, and they are what `rule all` and
`rule grid` ask Snakemake for."""

from __future__ import annotations

import re

import pytest
from pipeline_sandbox import repo_config, sandbox, snakemake

from mfsym.pipeline.targets import final_targets, grid_targets

FIGURES = "results/figures"
#: what the default configuration's `rule all` asked for when the rule files still appended
#: to a global list
DEFAULT_TARGETS = [
    "results/summary.nc",
    *(f"{FIGURES}/{name}.{ext}"
      for name in ("fig_rmd_si_init", "fig_rmd_wi_init", "fig_particles_arbitrary",
                   "fig_particles_wi", "fig_particles_si", "fig_loss_curves")
      for ext in ("pdf", "png")),
    "results/heuristic.nc",
    f"{FIGURES}/fig_heuristic.pdf",
    f"{FIGURES}/fig_heuristic.png",
    *(f"{FIGURES}/{name}.{ext}"
      for name in ("fig_noether_drift", "fig_finite_n_invariance",
                   "fig_weight_decay_attraction", "fig_layer_balance",
                   "fig_angular_momentum", "fig_tangent_kernel")
      for ext in ("pdf", "png")),
    *(f"{FIGURES}/{name}.{ext}"
      for name in ("fig_mlp_rmd_si_init", "fig_resnet_rmd_si_init")
      for ext in ("pdf", "png")),
    "results/rotation/summary.nc",
    "results/rotation/quadrature.nc",
    *(f"{FIGURES}/{name}.{ext}"
      for name in ("fig_rmd_so2_si_init", "fig_fa_quadrature") for ext in ("pdf", "png")),
    "results/saddle.nc",
    f"{FIGURES}/fig_saddle_escape.pdf",
    f"{FIGURES}/fig_saddle_escape.png",
]


def test_default_targets_are_those_the_rule_files_used_to_collect():
    assert final_targets(repo_config()) == DEFAULT_TARGETS


def test_targets_follow_the_configuration():
    cfg = {**repo_config(), "results_dir": "out", "inits": ["WI"], "teachers": ["SI"]}
    grid = grid_targets(cfg)
    assert grid == ["out/summary.nc", "out/figures/fig_rmd_wi_init.pdf",
                    "out/figures/fig_rmd_wi_init.png", "out/figures/fig_particles_si.pdf",
                    "out/figures/fig_particles_si.png", "out/figures/fig_loss_curves.pdf",
                    "out/figures/fig_loss_curves.png"]
    final = final_targets(cfg)
    # heuristic.nc and its figure, 6 Noether figures, 2 deep figures, the rotation stage,
    # the saddle study
    assert final[: len(grid)] == grid and len(final) == len(grid) + 15 + 4 + 6 + 3
    without = {k: v for k, v in cfg.items() if k != "saddle"}
    assert final_targets(without) == final[:-3]
    assert all(path.startswith("out/") for path in final)


def target_inputs(output: str, rule: str) -> set[str]:
    """The inputs of the target job ``rule`` in a dry run's job listing."""
    match = re.search(rf"^(?:local)?rule {rule}:\n\s+input: (.*)$", output, re.M)
    assert match, output[-3000:]
    return set(match[1].split(", "))


@pytest.mark.parametrize("name", ["config.yaml", "config/paper.yaml"])
def test_rule_all_asks_for_the_targets_and_every_figure_rule_is_among_them(tmp_path, name):
    cfg = repo_config(name)
    wf = sandbox(tmp_path / "wf", cfg)
    res = snakemake(wf, "--workflow-profile", "none", "-n", "all", "grid")
    out = res.stdout + res.stderr
    assert target_inputs(out, "all") == set(final_targets(cfg))
    assert target_inputs(out, "grid") == set(grid_targets(cfg))
    rules = snakemake(wf, "--workflow-profile", "none", "--list-rules").stdout.split()
    drawn = {f"{FIGURES.replace('results', cfg['results_dir'])}/{rule}.{ext}"
             for rule in rules if rule.startswith("fig_") for ext in ("pdf", "png")}
    assert drawn == {path for path in final_targets(cfg) if "/figures/" in path}
