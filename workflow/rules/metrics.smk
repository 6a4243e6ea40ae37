# Per-job metrics (RMD to projected / symmetrised, between schemes and to the same-scheme
# baseline, L2 between models, population risk), in parallel jobs like the training, then
# aggregated into summary.nc. The job's threads solve its independent W2 problems.
METRICS_RESOURCES = config["resources"]["metrics"]


rule metrics:
    priority: PRIORITY["metrics"]
    input:
        runs=rules.train.output[0],
        eval=rules.eval_sample.output[0],
    output:
        f"{RESULTS}/metrics/{JOB}.nc",
    params:
        group=CFG["group"],
        unit=CFG["unit"],
        pairs=CFG["metrics"]["pairs"],
    threads: METRICS_RESOURCES["threads"]
    resources:
        mem_mb=METRICS_RESOURCES["mem_mb"],
        runtime=METRICS_RESOURCES["runtime"],
    log:
        f"{RESULTS}/logs/metrics/{JOB}.log",
    benchmark:
        f"{RESULTS}/benchmarks/metrics/{JOB}.tsv"
    script:
        "../scripts/metrics.py"


rule summary:
    input:
        grid_paths(f"{RESULTS}/metrics/{JOB}.nc"),
    output:
        f"{RESULTS}/summary.nc",
    params:
        grid={
            "inits": CFG["inits"],
            "N": CFG["n_particles"],
            "teachers": CFG["teachers"],
            "schemes": CFG["schemes"],
            "seeds": CFG["seeds"],
            "pairs": CFG["metrics"]["pairs"],
        },
    log:
        f"{RESULTS}/logs/summary.log",
    script:
        "../scripts/summary.py"
