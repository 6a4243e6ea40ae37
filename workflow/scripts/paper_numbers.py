"""Write the manuscript's measured numbers (TeX macros), claims table and claims JSON."""

from mfsym.paper.numbers import write_paper_numbers
from mfsym.pipeline.precision_swap import make_rerun
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk) as log:
    claims = write_paper_numbers(
        summary_path=smk.input.summary,
        heuristic_path=smk.input.heuristic,
        noether_paths={
            "drift": smk.input.noether_drift, "invariance": smk.input.noether_invariance
        },
        macros_path=smk.output.macros,
        table_path=smk.output.table,
        json_path=smk.output.claims,
        sections=smk.params.sections,
        criteria=smk.params.criteria,
        digits=smk.params.digits,
        config=smk.config,
        precision_n=smk.params.precision_n,
        deep_paths={"mlp": smk.input.deep_mlp, "resnet": smk.input.deep_resnet},
        rotation_path=smk.input.rotation,
        saddle_path=smk.input.get("saddle"),
        rerun=make_rerun(smk.config),
        seed_paths={k: smk.input[f"noether_{k}"] for k in ("balance", "momentum", "tangent")},
    )
    for c in claims:
        log.info("claim %s %s: %s", c.claim, c.key, c.verdict)
        for label, value in c.values:
            log.info("    %s: %s", label, value)
