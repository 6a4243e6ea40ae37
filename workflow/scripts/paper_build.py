"""Compile paper/ms.tex with latexmk into the manuscript PDF."""

from mfsym.paper.build import build_pdf

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

build_pdf(
    tex_path=smk.input.tex,
    generated=[smk.input.macros, smk.input.table],
    figures=smk.input.figures,
    output_pdf=smk.output.pdf,
    build_dir=smk.params.build_dir,
    log_path=smk.log[0],
    timeout_s=smk.params.timeout_s,
)
