"""Train every teacher x scheme x seed of one (init, N, seed block) and write its runs."""

from mfsym.pipeline.runs import train_job
from mfsym.records.joblog import script_log

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)

with script_log(smk):
    train_job(
        smk.params.setting,
        init=smk.wildcards.init,
        n_particles=int(smk.wildcards.N),
        paths={
            "teachers": smk.input.teachers, "initial": smk.input.initial, "eval": smk.input.eval
        },
        output=smk.output[0],
        config=smk.config,
        checkpoint_path=smk.params.checkpoint,
        threads=smk.threads,
    )
