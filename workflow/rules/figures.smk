# Figures: one rule per figure, PDF and PNG in figures/, each with a report caption. They
# read only summary.nc or the per-run particle files. Each rule takes its figure module as
# an input, so editing that module reruns only its figures.
from mfsym.figures import module_file

FIGURES = CFG["figures"]
FIGURE_RESOURCES = config["resources"]["figures"]
FIGURE_STYLE = module_file("style")


for _init in GRID.inits:

    rule:
        name:
            targets.rmd_figure(_init)
        input:
            summary=rules.summary.output[0],
            module=module_file("rmd"),
            style=FIGURE_STYLE,
        output:
            **figure_outputs(targets.rmd_figure(_init), "RMD vs N"),
        params:
            init=_init,
            figures=FIGURES,
            scope="SUMMARY",
        resources:
            mem_mb=FIGURE_RESOURCES["mem_mb"],
            runtime=FIGURE_RESOURCES["runtime"],
        log:
            f"{RESULTS}/logs/figures/{targets.rmd_figure(_init)}.log",
        script:
            "../scripts/fig_rmd.py"


PARTICLES_INIT = FIGURES["particles_init"]
PARTICLES_N = particles_n(config)
PARTICLES_SEED = FIGURES["particles_seed"]
PARTICLES_RUNS = f"{RESULTS}/runs/{JOB}.nc".format(
    init=PARTICLES_INIT, N=PARTICLES_N, block=GRID.block_of(PARTICLES_SEED)
)

for _teacher in config["teachers"]:

    rule:
        name:
            targets.particles_figure(_teacher)
        input:
            runs=PARTICLES_RUNS,
            teachers=rules.teachers.output[0],
            module=module_file("particles"),
            style=FIGURE_STYLE,
        output:
            **figure_outputs(targets.particles_figure(_teacher), "Particles"),
        params:
            teacher=_teacher,
            seed=PARTICLES_SEED,
            figures=FIGURES,
        resources:
            mem_mb=FIGURE_RESOURCES["mem_mb"],
            runtime=FIGURE_RESOURCES["runtime"],
        log:
            f"{RESULTS}/logs/figures/{targets.particles_figure(_teacher)}.log",
        script:
            "../scripts/fig_particles.py"


rule fig_loss_curves:
    input:
        summary=rules.summary.output[0],
        module=module_file("curves"),
        style=FIGURE_STYLE,
    output:
        **figure_outputs(targets.LOSS_CURVES_FIGURE, "Training"),
    params:
        figures=FIGURES,
    resources:
        mem_mb=FIGURE_RESOURCES["mem_mb"],
        runtime=FIGURE_RESOURCES["runtime"],
    log:
        f"{RESULTS}/logs/figures/fig_loss_curves.log",
    script:
        "../scripts/fig_loss_curves.py"


rule grid:
    """The paper grid alone (training, metrics, summary.nc and its figures): `snakemake grid`."""
    input:
        targets.grid_targets(config),
