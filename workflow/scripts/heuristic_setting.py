"""Gather the step files of one heuristic setting (with its principal angles to E^G)."""

from mfsym.records.joblog import script_log
from mfsym.studies.heuristic import setting_job

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    setting_job(smk.params.setting, list(smk.input), smk.output[0], smk.config)
