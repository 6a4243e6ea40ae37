"""Write the manuscript's measured numbers (TeX macros), claims table and claims JSON."""

from pathlib import Path

from mfsym.paper.numbers import write_paper_numbers

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

claims = write_paper_numbers(
    summary_path=smk.input.summary,
    heuristic_path=smk.input.heuristic,
    noether_paths={"drift": smk.input.noether_drift, "invariance": smk.input.noether_invariance},
    macros_path=smk.output.macros,
    table_path=smk.output.table,
    json_path=smk.output.claims,
    sections=smk.params.sections,
    criteria=smk.params.criteria,
    digits=smk.params.digits,
)
Path(smk.log[0]).write_text("".join(f"claim {c.claim} {c.key}: {c.verdict}\n" for c in claims))
