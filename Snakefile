# Reproduction pipeline for "Symmetries in Overparametrized Neural Networks: A Mean-Field View".
# Rules live in workflow/rules/*.smk; all science lives in the mfsym library (src/mfsym).
from snakemake.utils import min_version, validate

from mfsym.pipeline.config import check_config, load_schema
from mfsym.pipeline.targets import final_targets

min_version("9.0")


configfile: "config.yaml"


# A bad configuration stops here, before any job, naming each bad key and what is allowed;
# snakemake's own validation then fills schema defaults.
check_config(config, load_schema(f"{workflow.basedir}/workflow/schemas/config.schema.yaml"))
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/heuristic.smk"
include: "workflow/rules/noether.smk"
include: "workflow/rules/paper.smk"


rule all:
    default_target: True
    input:
        final_targets(config),
