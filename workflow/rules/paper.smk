# The manuscript: result datasets -> TeX macros and claims table -> paper/ms.pdf (latexmk).
# Not part of `rule all` (the rest of the pipeline needs no LaTeX): `snakemake paper`.
from pathlib import Path

import mfsym
from mfsym.paper.build import figures_in_tex
from mfsym.records.source_hash import source_sha256

# The library code the numbers job runs (the claims, the macros, the precision swap's
# reruns): a parameter, so that an edit of it reruns the job and nothing else.
PAPER_NUMBERS_SOURCE = source_sha256(
    Path(mfsym.__file__).parent, ("paper.numbers", "pipeline.precision_swap")
)

PAPER_TEX = "paper/ms.tex"
PAPER_OUTPUT = "paper/output"


def paper_figures(wildcards):
    """The figure PDFs ms.tex includes (read only when the paper is built)."""
    return [f"{RESULTS}/figures/{name}.pdf" for name in figures_in_tex(PAPER_TEX)]


rule paper_numbers:
    input:
        summary=f"{RESULTS}/summary.nc",
        heuristic=f"{RESULTS}/heuristic.nc",
        noether_drift=f"{RESULTS}/noether/drift.nc",
        noether_invariance=f"{RESULTS}/noether/invariance.nc",
        noether_balance=f"{RESULTS}/noether/balance.nc",
        noether_momentum=f"{RESULTS}/noether/momentum.nc",
        noether_tangent=f"{RESULTS}/noether/tangent.nc",
        deep_mlp=f"{RESULTS}/deep/mlp.nc",
        deep_resnet=f"{RESULTS}/deep/resnet.nc",
        rotation=rules.rotation_summary.output[0],
        **({"saddle": f"{RESULTS}/{targets.SADDLE_DATASET}"} if config.get("saddle") else {}),
    output:
        macros=f"{PAPER_OUTPUT}/numbers.tex",
        table=f"{PAPER_OUTPUT}/claims.tex",
        claims=f"{PAPER_OUTPUT}/claims.json",
    params:
        sections={key: config[key] for key in ("group", "unit", "training") if key in config},
        criteria=config["paper"]["criteria"],
        digits=config["paper"]["digits"],
        precision_n=config["paper"]["precision_n"],
        source=PAPER_NUMBERS_SOURCE,
    log:
        f"{RESULTS}/logs/paper_numbers.log",
    script:
        "../scripts/paper_numbers.py"


rule paper:
    input:
        tex=PAPER_TEX,
        macros=rules.paper_numbers.output.macros,
        table=rules.paper_numbers.output.table,
        figures=paper_figures,
    output:
        pdf="paper/ms.pdf",
    params:
        build_dir=config["paper"]["build_dir"],
        timeout_s=config["paper"]["latex_timeout_s"],
    log:
        f"{RESULTS}/logs/paper_build.log",
    script:
        "../scripts/paper_build.py"
