"""Gather the step files of one heuristic setting (with its principal angles to E^G)."""

from mfsym.studies.heuristic import setting_job

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

setting_job(smk.params.setting, list(smk.input), smk.output[0], smk.config)
