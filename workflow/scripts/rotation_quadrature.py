"""Run the FA_K study (FA over K-point subgroups against K) of the rotation stage."""

from mfsym.pipeline.rotation import quadrature_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    quadrature_job(smk.params.section, smk.params.training, smk.output[0], smk.config,
                   threads=smk.threads)
