"""Draw the loss-curve figure (fig_loss_curves) from summary.nc."""

from mfsym.figures.curves import curves_job

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

curves_job(smk.input.summary, smk.params.figures, {"pdf": smk.output.pdf, "png": smk.output.png})
