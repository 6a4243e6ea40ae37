"""Write the initial particles shared by every run of one (init, N, seed block)."""

from mfsym.pipeline.data import initial_dataset
from mfsym.records.joblog import script_log
from mfsym.records.results import write_dataset

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    init, n = smk.wildcards.init, int(smk.wildcards.N)
    ds = initial_dataset(
        smk.params.group, smk.params.unit, smk.params.training, init, n, smk.params.seeds
    )
    write_dataset(ds, smk.output[0], smk.config, f"initial particles, init={init}, N={n}")
