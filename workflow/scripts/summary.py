"""Aggregate the per-job metrics into summary.nc."""

import logging

from mfsym.pipeline.summary import summary_job

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
logging.basicConfig(filename=smk.log[0], level=logging.INFO)

summary_job(list(smk.input), smk.output[0], smk.config, smk.params.grid)
