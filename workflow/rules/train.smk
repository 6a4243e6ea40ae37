# Training: one job per (init, N, seed block); every teacher x scheme x seed of the job is
# stacked into one tensor program (mfsym.engine.training.train_stack). Jobs are grouped for cluster
# submission (group-components in the cluster profile). A job checkpoints every
# training.checkpoint_every steps under checkpoints/ (not an output, so it survives a failed
# or killed job and the rerun resumes from it); the checkpoint is deleted after success.
TRAIN_RESOURCES = config["resources"]["train"]
ON_GPU = str(config["training"]["device"]).startswith("cuda")


rule train:
    input:
        teachers=rules.teachers.output[0],
        initial=rules.initial_particles.output[0],
        eval=rules.eval_sample.output[0],
    output:
        f"{RESULTS}/runs/{JOB}.nc",
    params:
        setting={
            **{key: CFG[key] for key in ("group", "unit", "training", "schemes")},
            "baseline": CFG["metrics"]["baseline"],
        },
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
    benchmark:
        f"{RESULTS}/benchmarks/train/{JOB}.tsv"
    script:
        "../scripts/train.py"
