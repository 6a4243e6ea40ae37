"""Run one Noether study (drift, invariance or attraction) and write its dataset."""

from mfsym.records.joblog import script_log
from mfsym.records.results import write_dataset
from mfsym.studies.noether import run_study

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    dataset, title = run_study(smk.wildcards.study, smk.params.noether, threads=smk.threads)
    write_dataset(dataset, smk.output[0], smk.config, title)
