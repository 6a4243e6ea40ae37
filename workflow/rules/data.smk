# Inputs shared by the training jobs: the teacher clouds, the fixed evaluation sample of the
# population risk, and the initial particles of every (init, N, seed block), which every
# teacher and scheme of a seed starts from.


rule teachers:
    priority: PRIORITY["data"]
    output:
        f"{RESULTS}/data/teachers.nc",
    params:
        group=CFG["group"],
        unit=CFG["unit"],
        teachers=CFG["teachers"],
        data=CFG["data"],
    log:
        f"{RESULTS}/logs/data/teachers.log",
    script:
        "../scripts/teachers.py"


rule eval_sample:
    priority: PRIORITY["data"]
    output:
        f"{RESULTS}/data/eval_sample.nc",
    params:
        group=CFG["group"],
        training={k: CFG["training"][k] for k in ("n_eval", "input_std", "eval_seed")},
    log:
        f"{RESULTS}/logs/data/eval_sample.log",
    script:
        "../scripts/eval_sample.py"


rule initial_particles:
    priority: PRIORITY["data"]
    output:
        f"{RESULTS}/data/initial/{JOB}.nc",
    params:
        group=CFG["group"],
        unit=CFG["unit"],
        training={"init_std": CFG["training"]["init_std"]},
        seeds=lambda wildcards: list(GRID.blocks[wildcards.block]),
    log:
        f"{RESULTS}/logs/data/initial/{JOB}.log",
    script:
        "../scripts/initial_particles.py"
