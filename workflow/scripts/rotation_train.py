"""Train every teacher x scheme x seed of one (init, N) of the rotation stage."""

from mfsym.pipeline.rotation import train_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    train_job(
        smk.params.section, smk.params.training, smk.wildcards.rinit, int(smk.wildcards.rN),
        smk.output[0], smk.config, checkpoint_path=smk.params.checkpoint, threads=smk.threads,
    )
