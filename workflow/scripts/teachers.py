"""Write the teacher clouds (data/teachers.nc)."""

import logging

from mfsym.pipeline.data import teacher_dataset
from mfsym.records.results import write_dataset

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
logging.basicConfig(filename=smk.log[0], level=logging.INFO)

ds = teacher_dataset(smk.params.group, smk.params.unit, smk.params.teachers, smk.params.data)
write_dataset(ds, smk.output[0], smk.config, "teacher clouds")
