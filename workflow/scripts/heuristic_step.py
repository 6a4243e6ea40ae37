"""Run one step of the SI-subspace discovery heuristic for one setting and write it."""

from mfsym.pipeline.heuristic import step_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    step_job(
        smk.params.setting,
        smk.params.heuristic,
        smk.params.training,
        step=int(smk.wildcards.step),
        previous=smk.input[0] if len(smk.input) else None,
        output=smk.output[0],
        config=smk.config,
        threads=smk.threads,
    )
