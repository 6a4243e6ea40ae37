"""Run one Noether study (drift, invariance or attraction) and write its dataset."""

import logging

from mfsym.records.results import write_dataset
from mfsym.studies.noether import run_study

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
logging.basicConfig(
    filename=smk.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
)

dataset, title = run_study(smk.wildcards.study, smk.params.noether, threads=smk.threads)
write_dataset(dataset, smk.output[0], smk.config, title)
