# The rotation stage (PAPER.md §11): SO(2) or O(2) about one axis with the uv unit, through
# the grid's machinery: one training job per (init, N) stacking every teacher x scheme x
# seed, its metrics (RMD to nu^G by the K_sym-point orbit), rotation/summary.nc with the
# teachers' equivariance errors, the FA_K study against K, and their figures.
from mfsym.pipeline.rotation import check_section as check_rotation

ROTATION = config["rotation"]
check_rotation(ROTATION, config["training"])  # every key of the section, before any job
ROTATION_DIR = f"{RESULTS}/{targets.ROTATION_DIR}"
ROTATION_CFG = {k: v for k, v in CFG["rotation"].items() if k != "resources"}
ROTATION_RESOURCES = config["rotation"]["resources"]
ROTATION_JOB = "{rinit}/N{rN}"


wildcard_constraints:
    rinit="|".join(ROTATION["inits"]),
    rN=r"[0-9]+",


rule rotation_train:
    output:
        f"{ROTATION_DIR}/runs/{ROTATION_JOB}.nc",
    params:
        section=ROTATION_CFG,
        training=CFG["training"],
        checkpoint=lambda wildcards: f"{RESULTS}/checkpoints/rotation/{ROTATION_JOB}.npz".format(
            **wildcards
        ),
    threads: ROTATION_RESOURCES["threads"]
    resources:
        mem_mb=ROTATION_RESOURCES["mem_mb"],
        runtime=ROTATION_RESOURCES["runtime"],
    log:
        f"{RESULTS}/logs/rotation/train/{ROTATION_JOB}.log",
    benchmark:
        f"{RESULTS}/benchmarks/rotation/train/{ROTATION_JOB}.tsv"
    script:
        "../scripts/rotation_train.py"


rule rotation_metrics:
    input:
        runs=rules.rotation_train.output[0],
    output:
        f"{ROTATION_DIR}/metrics/{ROTATION_JOB}.nc",
    params:
        section=ROTATION_CFG,
    threads: ROTATION_RESOURCES["threads"]
    resources:
        mem_mb=ROTATION_RESOURCES["mem_mb"],
        runtime=ROTATION_RESOURCES["runtime"],
    log:
        f"{RESULTS}/logs/rotation/metrics/{ROTATION_JOB}.log",
    script:
        "../scripts/rotation_metrics.py"


rule rotation_summary:
    input:
        [f"{ROTATION_DIR}/metrics/{i}/N{n}.nc" for i in ROTATION["inits"]
         for n in ROTATION["n_particles"]],
    output:
        f"{ROTATION_DIR}/summary.nc",
    params:
        section=ROTATION_CFG,
        training=CFG["training"],
    log:
        f"{RESULTS}/logs/rotation/summary.log",
    script:
        "../scripts/rotation_summary.py"


rule rotation_quadrature:
    output:
        f"{ROTATION_DIR}/quadrature.nc",
    params:
        section=ROTATION_CFG,
        training=CFG["training"],
    threads: config["rotation"]["quadrature"].get("threads", ROTATION_RESOURCES["threads"])
    resources:
        mem_mb=ROTATION_RESOURCES["mem_mb"],
        runtime=ROTATION_RESOURCES["runtime"],
    log:
        f"{RESULTS}/logs/rotation/quadrature.log",
    benchmark:
        f"{RESULTS}/benchmarks/rotation/quadrature.tsv"
    script:
        "../scripts/rotation_quadrature.py"


for _init in ROTATION["inits"]:

    rule:
        name:
            targets.rotation_rmd_figure(ROTATION["group"]["name"], _init)
        input:
            summary=rules.rotation_summary.output[0],
            module=module_file("rmd"),
            style=FIGURE_STYLE,
        output:
            **figure_outputs(
                targets.rotation_rmd_figure(ROTATION["group"]["name"], _init), "Rotation"
            ),
        params:
            init=_init,
            figures=FIGURES,
            scope="ROTATION",
        resources:
            mem_mb=FIGURE_RESOURCES["mem_mb"],
            runtime=FIGURE_RESOURCES["runtime"],
        log:
            f"{RESULTS}/logs/figures/"
            f"{targets.rotation_rmd_figure(ROTATION['group']['name'], _init)}.log",
        script:
            "../scripts/fig_rmd.py"


rule fig_fa_quadrature:
    input:
        quadrature=rules.rotation_quadrature.output[0],
        module=module_file("rotation"),
        style=FIGURE_STYLE,
    output:
        **figure_outputs(targets.FA_QUADRATURE_FIGURE, "Rotation"),
    params:
        figures=FIGURES,
    resources:
        mem_mb=FIGURE_RESOURCES["mem_mb"],
        runtime=FIGURE_RESOURCES["runtime"],
    log:
        f"{RESULTS}/logs/figures/fig_fa_quadrature.log",
    script:
        "../scripts/fig_fa_quadrature.py"


rule rotation:
    """The rotation stage alone: `snakemake rotation`."""
    input:
        targets.rotation_targets(config),
