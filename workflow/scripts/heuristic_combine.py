"""Write heuristic.nc from the per-setting heuristic files."""

from mfsym.pipeline.heuristic import combine_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    combine_job(list(smk.input), smk.output[0], smk.config)
