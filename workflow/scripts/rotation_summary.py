"""Aggregate the rotation stage's metrics into rotation/summary.nc."""

from mfsym.pipeline.rotation import summary_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    summary_job(smk.params.section, smk.params.training, list(smk.input), smk.output[0],
                smk.config)
