"""Draw the RMD figure of one deep stage and initialisation from its dataset."""

from mfsym.figures.deep import deep_rmd_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    deep_rmd_job(smk.input.dataset, smk.params.stage, smk.params.init, smk.params.figures,
                 {"pdf": smk.output.pdf, "png": smk.output.png}, config=smk.config)
