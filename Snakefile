# Reproduction pipeline for "Symmetries in Overparametrized Neural Networks: A Mean-Field View".
# Rules live in workflow/rules/*.smk; all science lives in the mfsym library (src/mfsym).
import os

from snakemake.utils import min_version, validate

from mfsym.pipeline.config import check_all, load_schema, read_config_file
from mfsym.pipeline.study_checks import STUDY_CHECKS
from mfsym.pipeline.targets import final_targets

min_version("9.0")

# A YAML mistake in the default configuration file is reported with its file and line.
if os.path.exists("config.yaml"):
    read_config_file("config.yaml")


configfile: "config.yaml"


# A bad configuration stops here, before any job, naming each bad key, its value and what is
# allowed: strings from --config are read as their schema types, then the schema, the checks
# across keys and the output folders are checked. snakemake's validation fills defaults.
config.update(
    check_all(
        config,
        load_schema(f"{workflow.basedir}/workflow/schemas/config.schema.yaml"),
        workflow.basedir,  # the repository root
        os.getcwd(),  # relative folders are relative to the working directory
        checks=STUDY_CHECKS,  # the studies' own cross-key rules
    )
)
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/heuristic.smk"
include: "workflow/rules/noether.smk"
include: "workflow/rules/deep.smk"
include: "workflow/rules/rotation.smk"
include: "workflow/rules/saddle.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/bundle.smk"


rule all:
    default_target: True
    input:
        final_targets(config),
