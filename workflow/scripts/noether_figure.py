"""Draw one Noether figure from its study dataset."""

from mfsym.figures.noether import noether_figure_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    noether_figure_job(
        smk.params.name, smk.input.dataset, smk.params.figures,
        {"pdf": smk.output.pdf, "png": smk.output.png},
        config=smk.config,
    )
