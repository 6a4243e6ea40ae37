# Training: one job per (init, N, seed block); every teacher x scheme x seed of the job is
# stacked into one tensor program (mfsym.engine.training.train_stack). Jobs are grouped for cluster
# submission (group-components in the cluster profile). A job checkpoints every
# training.checkpoint_every steps under checkpoints/ (not an output, so it survives a failed
# or killed job and the rerun resumes from it); the checkpoint is deleted after success.
#
# Training is marked for Snakemake's between-workflow output cache: with
# SNAKEMAKE_OUTPUT_CACHE=<folder> and --cache, a job whose script, parameters and inputs
# were trained before (by any checkout sharing the folder) takes the run file and its
# checksum from the cache. The hash of the library's training source is a parameter, so
# a code change never reuses a run file of other code. (Snakemake allows no benchmark file
# on a cached rule; the job's log holds its wall time.)
from mfsym.pipeline.runs import training_source_sha256
TRAIN_RESOURCES = config["resources"]["train"]
ON_GPU = str(config["training"]["device"]).startswith("cuda")


rule train:
    cache: True
    priority: PRIORITY["train"]
    input:
        teachers=rules.teachers.output[0],
        initial=rules.initial_particles.output[0],
        eval=rules.eval_sample.output[0],
    output:
        # the run file and its checksum sidecar, cached together
        multiext(f"{RESULTS}/runs/{JOB}", ".nc", ".nc.sha256"),
    params:
        setting={
            **{key: CFG[key] for key in ("group", "unit", "training", "schemes")},
            "baseline": CFG["metrics"]["baseline"],
        },
        source=training_source_sha256(),
        checkpoint=lambda wildcards: f"{RESULTS}/checkpoints/{JOB}.npz".format(**wildcards),
    threads: TRAIN_RESOURCES["threads"]
    resources:
        mem_mb=TRAIN_RESOURCES["mem_mb"],
        runtime=TRAIN_RESOURCES["runtime"],
        gpu=TRAIN_RESOURCES["gpus"] if ON_GPU else 0,
    group:
        "train"
    log:
        f"{RESULTS}/logs/train/{JOB}.log",
    script:
        "../scripts/train.py"
