"""Gather the step files of one heuristic setting (with its principal angles to E^G)."""

from mfsym.pipeline.heuristic import setting_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    setting_job(smk.params.setting, list(smk.input), smk.output[0], smk.config)
