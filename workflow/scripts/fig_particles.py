"""Draw one particle figure (fig_particles_<teacher>) from a run file and the teachers."""

from mfsym.figures.particles import particles_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    particles_job(
        smk.input.runs,
        smk.input.teachers,
        smk.params.teacher,
        smk.params.seed,
        smk.params.figures,
        {"pdf": smk.output.pdf, "png": smk.output.png},
        config=smk.config,
    )
