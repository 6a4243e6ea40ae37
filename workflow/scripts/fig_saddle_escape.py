"""Draw fig_saddle_escape (vanilla's escape from E^G against N) from saddle.nc."""

from mfsym.figures.saddle import saddle_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    saddle_job(
        smk.input.saddle, smk.params.figures, {"pdf": smk.output.pdf, "png": smk.output.png},
        config=smk.config,
    )
