"""Draw one RMD figure (fig_rmd_si_init, fig_rmd_wi_init; the rotation stage's
fig_rmd_so2_si_init) from its summary, checked on the lineage scope named by the rule."""

from mfsym.figures.rmd import rmd_job
from mfsym.records import lineage
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    rmd_job(
        smk.input.summary,
        smk.params.init,
        smk.params.figures,
        {"pdf": smk.output.pdf, "png": smk.output.png},
        config=smk.config,
        scope=getattr(lineage, smk.params.scope),
    )
