"""Write the teacher clouds (data/teachers.nc)."""

from mfsym.pipeline.data import teacher_dataset
from mfsym.records.joblog import script_log
from mfsym.records.results import write_dataset

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    ds = teacher_dataset(smk.params.group, smk.params.unit, smk.params.teachers, smk.params.data)
    write_dataset(ds, smk.output[0], smk.config, "teacher clouds")
