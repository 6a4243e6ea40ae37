"""Draw the loss-curve figure (fig_loss_curves) from summary.nc."""

from mfsym.figures.curves import curves_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    curves_job(
        smk.input.summary, smk.params.figures, {"pdf": smk.output.pdf, "png": smk.output.png},
        config=smk.config,
    )
