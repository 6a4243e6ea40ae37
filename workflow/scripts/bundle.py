"""Write the results bundle: result files, claims, figures, configuration and lock."""

from mfsym.pipeline.bundle import write_bundle
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    write_bundle(dict(zip(smk.params.names, smk.input, strict=True)), smk.config, smk.output[0])
