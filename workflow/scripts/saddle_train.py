"""Train every scheme x seed of one N of the saddle study."""

from mfsym.pipeline.saddle import train_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    train_job(
        smk.params.section, smk.params.training, int(smk.wildcards.sN), smk.output[0],
        smk.config, checkpoint_path=smk.params.checkpoint, threads=smk.threads,
    )
