"""Per-run metrics of one training job (RMDs, L² between models, population risk, curves)."""

from mfsym.pipeline.metrics import metrics_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    metrics_job(
        smk.params.group, smk.params.unit, smk.params.pairs, smk.input.runs, smk.output[0],
        smk.config, eval_path=smk.input.eval, threads=smk.threads,
    )
