"""Write the fixed Monte-Carlo sample of the population risk (data/eval_sample.nc)."""

from mfsym.pipeline.data import evaluation_dataset
from mfsym.records.joblog import script_log
from mfsym.records.results import write_dataset

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    ds = evaluation_dataset(smk.params.group, smk.params.training)
    write_dataset(ds, smk.output[0], smk.config, "population-risk evaluation sample")
