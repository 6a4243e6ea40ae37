"""Train one deep stage (mlp ensemble or mean-ODE ResNet) and write its dataset."""

from mfsym.pipeline.deep import deep_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    deep_job(smk.params.stage, smk.params.deep, smk.params.training, smk.output[0],
             smk.config, checkpoint_dir=smk.params.checkpoint_dir, threads=smk.threads)
