# The saddle study (PAPER.md §12): vanilla's escape from E^G against N where the SI-restricted
# flow reaches a saddle. One training job per N stacking every scheme x seed (the rotation
# stage's training job), then saddle.nc (escape times, rates, collapse, ln N law, risk
# ratios; mfsym.pipeline.saddle) and fig_saddle_escape. Optional: no `saddle` section, no rules.
if config.get("saddle"):
    from mfsym.pipeline.saddle import check_section as check_saddle

    SADDLE = config["saddle"]
    check_saddle(SADDLE, config["training"])  # every key of the section, before any job
    SADDLE_DIR = f"{RESULTS}/{targets.SADDLE_DIR}"
    SADDLE_RESOURCES = SADDLE["resources"]
    # A run file depends neither on the analysis keys nor on the list of N (lineage
    # SADDLE_RUNS): changing them reruns the analysis, never the training.
    SADDLE_TRAIN_CFG = {
        k: v
        for k, v in CFG["saddle"].items()
        if k not in ("resources", "analysis", "delta", "n_particles")
    }
    SADDLE_CFG = {k: v for k, v in CFG["saddle"].items() if k != "resources"}

    wildcard_constraints:
        sN=r"[0-9]+",

    rule saddle_train:
        # the longest jobs of the study (cost grows as N^2): scheduled like the grid's training
        priority: PRIORITY["train"]
        output:
            f"{SADDLE_DIR}/runs/N{{sN}}.nc",
        params:
            section=SADDLE_TRAIN_CFG,
            training=CFG["training"],
            checkpoint=lambda wildcards: f"{RESULTS}/checkpoints/saddle/N{wildcards.sN}.npz",
        threads: SADDLE_RESOURCES["threads"]
        resources:
            mem_mb=SADDLE_RESOURCES["mem_mb"],
            runtime=SADDLE_RESOURCES["runtime"],
        log:
            f"{RESULTS}/logs/saddle/train/N{{sN}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/saddle/train/N{{sN}}.tsv"
        script:
            "../scripts/saddle_train.py"

    rule saddle_analysis:
        input:
            [f"{SADDLE_DIR}/runs/N{n}.nc" for n in SADDLE["n_particles"]],
        output:
            f"{RESULTS}/{targets.SADDLE_DATASET}",
        params:
            section=SADDLE_CFG,
        log:
            f"{RESULTS}/logs/saddle/analysis.log",
        benchmark:
            f"{RESULTS}/benchmarks/saddle/analysis.tsv"
        script:
            "../scripts/saddle_analysis.py"

    rule fig_saddle_escape:
        input:
            saddle=rules.saddle_analysis.output[0],
            module=module_file("saddle"),
            style=FIGURE_STYLE,
        output:
            **figure_outputs(targets.SADDLE_FIGURE, "Saddle"),
        params:
            figures=FIGURES,
        resources:
            mem_mb=FIGURE_RESOURCES["mem_mb"],
            runtime=FIGURE_RESOURCES["runtime"],
        log:
            f"{RESULTS}/logs/figures/{targets.SADDLE_FIGURE}.log",
        script:
            "../scripts/fig_saddle_escape.py"


rule saddle:
    """The saddle study alone: `snakemake saddle`."""
    input:
        targets.saddle_targets(config),
