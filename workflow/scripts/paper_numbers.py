"""Write the manuscript's measured numbers (TeX macros), claims table and claims JSON; for a
study's claims table (rule claims) only the grid and the inputs it names."""

from mfsym.paper.numbers import write_paper_numbers
from mfsym.pipeline.precision_swap import make_rerun
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
noether = {k: smk.input.get(f"noether_{k}") for k in ("drift", "invariance")}
deep = {k: smk.input.get(f"deep_{k}") for k in ("mlp", "resnet")}
seed = {k: smk.input.get(f"noether_{k}") for k in ("balance", "momentum", "tangent")}

with script_log(smk) as log:
    claims = write_paper_numbers(
        summary_path=smk.input.summary,
        heuristic_path=smk.input.get("heuristic"),
        noether_paths=noether if all(noether.values()) else None,
        macros_path=smk.output.macros,
        table_path=smk.output.table,
        json_path=smk.output.claims,
        markdown_path=smk.output.get("markdown"),
        sections=smk.params.sections,
        criteria=smk.params.criteria,
        digits=smk.params.digits,
        config=smk.config,
        precision_n=smk.params.get("precision_n"),
        deep_paths=deep if all(deep.values()) else None,
        rotation_path=smk.input.get("rotation"),
        saddle_path=smk.input.get("saddle"),
        rerun=make_rerun(smk.config),
        seed_paths=seed if all(seed.values()) else None,
    )
    for c in claims:
        log.info("claim %s %s: %s", c.claim, c.key, c.verdict)
        for label, value in c.values:
            log.info("    %s: %s", label, value)
