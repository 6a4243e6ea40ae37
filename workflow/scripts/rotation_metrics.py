"""Per-run metrics of one rotation-stage run file."""

from mfsym.pipeline.rotation import metrics_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    metrics_job(smk.params.section, smk.input.runs, smk.output[0], smk.config,
                threads=smk.threads)
