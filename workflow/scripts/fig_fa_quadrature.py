"""Draw fig_fa_quadrature (FA_K against K) from rotation/quadrature.nc."""

from mfsym.figures.rotation import quadrature_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    quadrature_job(
        smk.input.quadrature, smk.params.figures, {"pdf": smk.output.pdf, "png": smk.output.png},
        config=smk.config,
    )
