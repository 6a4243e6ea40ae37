"""Per-run metrics of one training job (RMDs, population risk, curves)."""

import logging

from mfsym.measure.metrics import metrics_job

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
logging.basicConfig(filename=smk.log[0], level=logging.INFO)

metrics_job(
    smk.params.group, smk.params.unit, smk.params.pairs, smk.input.runs, smk.output[0], smk.config
)
