# Deep settings (PAPER.md §10): the mlp ensemble (rule deep_units) and the mean-ODE ResNet
# (rule resnet), each one job training its grid through the one engine and writing
# deep/<stage>.nc; one RMD figure per stage and initialisation. All settings: `deep:`.
from mfsym.pipeline.deep import check_section as check_deep_section

check_deep_section(config["deep"], config["training"])  # every stage, before any job
DEEP = {k: v for k, v in CFG["deep"].items() if k != "resources"}
DEEP_RESOURCES = config["deep"]["resources"]

for _stage, _rule in targets.DEEP_RULES.items():

    rule:
        name:
            _rule
        output:
            f"{RESULTS}/deep/{_stage}.nc",
        params:
            stage=_stage,
            deep=DEEP,
            training=CFG["training"],
            checkpoint_dir=f"{RESULTS}/checkpoints/deep",
        threads: DEEP_RESOURCES["threads"]
        resources:
            mem_mb=DEEP_RESOURCES["mem_mb"],
            runtime=DEEP_RESOURCES["runtime"],
        log:
            f"{RESULTS}/logs/deep/{_stage}.log",
        benchmark:
            f"{RESULTS}/benchmarks/deep/{_stage}.tsv"
        script:
            "../scripts/deep_stage.py"

    for _init in config["deep"]["inits"]:

        rule:
            name:
                targets.deep_figure(_stage, _init)
            input:
                dataset=f"{RESULTS}/deep/{_stage}.nc",
                module=module_file("deep"),
                rmd=module_file("rmd"),
                style=FIGURE_STYLE,
            output:
                **figure_outputs(targets.deep_figure(_stage, _init), "Deep settings"),
            params:
                stage=_stage,
                init=_init,
                figures=FIGURES,
            resources:
                mem_mb=FIGURE_RESOURCES["mem_mb"],
                runtime=FIGURE_RESOURCES["runtime"],
            log:
                f"{RESULTS}/logs/figures/{targets.deep_figure(_stage, _init)}.log",
            script:
                "../scripts/fig_deep_rmd.py"
