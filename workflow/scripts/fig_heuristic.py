"""Draw fig_heuristic (particles per step and the stopping diagnostic) from heuristic.nc."""

from mfsym.figures.heuristic import heuristic_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    heuristic_job(
        smk.input.heuristic,
        smk.params.figures,
        {"pdf": smk.output.pdf, "png": smk.output.png},
        config=smk.config,
    )
