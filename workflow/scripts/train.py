"""Train every teacher x scheme x seed of one (init, N, seed block) and write its runs."""

import logging

from mfsym.pipeline.runs import train_job

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
logging.basicConfig(
    filename=smk.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
)

train_job(
    smk.params.setting,
    init=smk.wildcards.init,
    n_particles=int(smk.wildcards.N),
    paths={"teachers": smk.input.teachers, "initial": smk.input.initial, "eval": smk.input.eval},
    output=smk.output[0],
    config=smk.config,
    checkpoint_path=smk.params.checkpoint,
    threads=smk.threads,
)
