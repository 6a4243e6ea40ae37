"""Compile paper/ms.tex with latexmk into the manuscript PDF."""

from mfsym.paper.build import build_pdf
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    build_pdf(
        tex_path=smk.input.tex,
        generated=[smk.input.macros, smk.input.table],
        figures=smk.input.figures,
        output_pdf=smk.output.pdf,
        build_dir=smk.params.build_dir,
        timeout_s=smk.params.timeout_s,
    )
