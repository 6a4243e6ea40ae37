"""Draw one Noether figure from its study dataset."""

from mfsym.figures.noether import noether_figure_job

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

noether_figure_job(
    smk.params.name, smk.input.dataset, smk.params.figures,
    {"pdf": smk.output.pdf, "png": smk.output.png},
)
