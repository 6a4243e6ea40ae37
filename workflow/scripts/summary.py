"""Aggregate the per-job metrics into summary.nc."""

from mfsym.pipeline.summary import summary_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    summary_job(list(smk.input), smk.output[0], smk.config, smk.params.grid)
