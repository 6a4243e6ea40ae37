# The claims table of a study (stage `claims`, `snakemake claims`): the rows of the grid and,
# when the heuristic is among the stages, of the heuristic, read from summary.nc and
# heuristic.nc, without the other stages and without LaTeX (claims.md: the same as Markdown).


rule claims:
    input:
        summary=f"{RESULTS}/summary.nc",
        **({"heuristic": f"{RESULTS}/heuristic.nc"}
           if "heuristic" in targets.stages(config) else {}),
    output:
        **{key: f"{RESULTS}/{targets.CLAIMS_DIR}/{name}"
           for key, name in targets.CLAIMS_FILES.items()},
    params:
        sections={key: config[key] for key in ("group", "unit", "training")},
        criteria=config["paper"]["criteria"],
        digits=config["paper"]["digits"],
    log:
        f"{RESULTS}/logs/claims.log",
    script:
        "../scripts/paper_numbers.py"
