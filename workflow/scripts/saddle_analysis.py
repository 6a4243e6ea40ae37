"""The saddle study's statistics from its run files, into saddle.nc."""

from mfsym.pipeline.saddle import analysis_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    analysis_job(smk.params.section, list(smk.input), smk.output[0], smk.config)
