# SI-subspace discovery heuristic (PAPER.md §7), for every entry of heuristic.settings.
#
# The number of steps is only known at run time, so every step is one job of the checkpoint
# `heuristic_step`: step j reads E_j (the next_basis of step j-1), trains freely from E_j
# and writes heuristic/<setting>/step<j>.nc with its decision. The input function of
# `heuristic_setting` walks the chain: after each finished step Snakemake re-evaluates it,
# and it asks for step j+1 only while the last step's status is "enlarged". One such
# gathering job per setting lets the settings' chains run in parallel.
from mfsym.pipeline.heuristic import check_section, step_is_final

check_section(config["heuristic"], config["training"])  # every setting, before any job
HEURISTIC = {k: v for k, v in config["heuristic"].items() if k != "resources"}
HEURISTIC_SETTINGS = {s["name"]: s for s in HEURISTIC["settings"]}
HEURISTIC_RESOURCES = config["heuristic"]["resources"]
HEURISTIC_DIR = f"{RESULTS}/heuristic"


def heuristic_previous_step(wildcards):
    """Step j reads the file of step j - 1 (step 0 starts from the setting's `start`)."""
    step = int(wildcards.step)
    return [] if step == 0 else [f"{HEURISTIC_DIR}/{wildcards.setting}/step{step - 1}.nc"]


def heuristic_step_files(wildcards):
    """Files of steps 0..J of one setting, J the first step that ended the loop."""
    paths, step = [], 0
    while True:
        path = checkpoints.heuristic_step.get(setting=wildcards.setting, step=step).output[0]
        paths.append(path)
        if step_is_final(path):
            return paths
        step += 1


checkpoint heuristic_step:
    priority: PRIORITY["heuristic"]
    input:
        heuristic_previous_step,
    output:
        f"{HEURISTIC_DIR}/{{setting}}/step{{step}}.nc",
    wildcard_constraints:
        setting="|".join(HEURISTIC_SETTINGS),
        step=r"[0-9]+",
    params:
        setting=lambda wildcards: HEURISTIC_SETTINGS[wildcards.setting],
        heuristic={k: v for k, v in HEURISTIC.items() if k != "settings"},
        training=config["training"],
    threads: HEURISTIC_RESOURCES["threads"]
    resources:
        mem_mb=HEURISTIC_RESOURCES["mem_mb"],
        runtime=HEURISTIC_RESOURCES["runtime"],
    log:
        f"{RESULTS}/logs/heuristic/{{setting}}/step{{step}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/heuristic/{{setting}}/step{{step}}.tsv"
    script:
        "../scripts/heuristic_step.py"


rule heuristic_setting:
    input:
        heuristic_step_files,
    output:
        f"{HEURISTIC_DIR}/{{setting}}.nc",
    wildcard_constraints:
        setting="|".join(HEURISTIC_SETTINGS),
    params:
        setting=lambda wildcards: HEURISTIC_SETTINGS[wildcards.setting],
    log:
        f"{RESULTS}/logs/heuristic/{{setting}}.log",
    script:
        "../scripts/heuristic_setting.py"


rule heuristic:
    input:
        [f"{HEURISTIC_DIR}/{name}.nc" for name in HEURISTIC_SETTINGS],
    output:
        f"{RESULTS}/heuristic.nc",
    log:
        f"{RESULTS}/logs/heuristic/heuristic.log",
    script:
        "../scripts/heuristic_combine.py"


rule fig_heuristic:
    input:
        heuristic=rules.heuristic.output[0],
        module=module_file("heuristic"),
        style=FIGURE_STYLE,
    output:
        **figure_outputs(targets.HEURISTIC_FIGURE, "Heuristic"),
    params:
        figures=FIGURES,
    resources:
        mem_mb=FIGURE_RESOURCES["mem_mb"],
        runtime=FIGURE_RESOURCES["runtime"],
    log:
        f"{RESULTS}/logs/figures/fig_heuristic.log",
    script:
        "../scripts/fig_heuristic.py"
