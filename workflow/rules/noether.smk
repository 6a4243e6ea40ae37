# Noether studies (PAPER.md §9, §9b): conservation laws of the uv unit, finite-N invariance
# of E^G, balanced layers, angular momentum and the tangent kernel, as exact checks of the one
# training engine. One small job per study writes
# noether/<study>.nc; one rule per figure draws it. All settings: the `noether:` section.
NOETHER = {k: v for k, v in config["noether"].items() if k != "resources"}
NOETHER_RESOURCES = config["noether"]["resources"]
NOETHER_FIGURES = targets.NOETHER_FIGURES  # study -> figure
# The studies of PAPER.md §9b, whose figures are drawn by figures/noether_seed.py.
NOETHER_SEED_STUDIES = ("balance", "momentum", "tangent")


rule noether_study:
    output:
        f"{RESULTS}/noether/{{study}}.nc",
    wildcard_constraints:
        study="|".join(NOETHER_FIGURES),
    params:
        noether=NOETHER,
    threads: NOETHER_RESOURCES["threads"]
    resources:
        mem_mb=NOETHER_RESOURCES["mem_mb"],
        runtime=NOETHER_RESOURCES["runtime"],
    log:
        f"{RESULTS}/logs/noether/{{study}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/noether/{{study}}.tsv"
    script:
        "../scripts/noether_study.py"


for _study, _figure in NOETHER_FIGURES.items():

    rule:
        name:
            _figure
        input:
            dataset=f"{RESULTS}/noether/{_study}.nc",
            module=module_file("noether"),
            seed_module=(
                module_file("noether_seed") if _study in NOETHER_SEED_STUDIES else []
            ),
            style=FIGURE_STYLE,
        output:
            **figure_outputs(_figure, "Noether"),
        params:
            name=_figure,
            figures=FIGURES,
        resources:
            mem_mb=FIGURE_RESOURCES["mem_mb"],
            runtime=FIGURE_RESOURCES["runtime"],
        log:
            f"{RESULTS}/logs/figures/{_figure}.log",
        script:
            "../scripts/noether_figure.py"
