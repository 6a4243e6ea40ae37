# `snakemake bundle`: one archive of what a reader needs to redraw every figure and rebuild
# the paper without training (mfsym.pipeline.bundle): the result datasets, the claims, the
# figures, the configuration and the dependency lock, with a SHA-256 manifest and the
# provenance. `python3 -m mfsym.pipeline.bundle rebuild <archive>` verifies and uses it.
from mfsym.pipeline.bundle import bundle_files, bundle_path

BUNDLE_FILES = bundle_files(config)


rule bundle:
    input:
        list(BUNDLE_FILES.values()),
    output:
        bundle_path(config),
    params:
        names=list(BUNDLE_FILES),
    log:
        f"{RESULTS}/logs/bundle.log",
    script:
        "../scripts/bundle.py"
