"""Two runs of the pipeline from scratch, in two folders, write the same bytes.

Each run uses its own copy of the library (so edits to the checkout meanwhile change
nothing) and a tiny grid with small heuristic and Noether studies. Every file under
results/ and paper/output/ is compared by SHA-256, the logs and benchmark timings aside.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from pipeline_sandbox import library_env, local, sandbox, snakemake, tiny_config

#: small heuristic and Noether studies, so that the whole default target runs in minutes
FAST = {
    "heuristic": {"N": 24, "max_steps": 2, "training": {"T": 1.0, "batch_size": 24}},
    "noether": {
        "n_eval": 64,
        "drift": {"activations": ["relu", "tanh"], "etas": [0.04, 0.02], "flow_time": 0.2,
                  "langevin_betas": [1.0e-4, 1.0e-2], "decay_lambdas": [0.5]},
        "invariance": {"flow_time": 0.2, "n_snapshots": 3},
        "attraction": {"lambdas": [0.0, 0.3], "flow_time": 0.4, "n_snapshots": 3},
    },
    "figures": {"dpi": 40},
}
#: run-time records, not results: they differ between any two runs
TIMING = ("logs", "benchmarks")


def fast_config() -> dict:
    return tiny_config(FAST)


def result_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under results/ and paper/output/, logs and timings aside."""
    out = {}
    for sub in ("results", "paper/output"):
        for path in sorted((folder / sub).rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and not (rel.parts[0] == "results" and rel.parts[1] in TIMING):
                out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.slow
def test_two_runs_from_scratch_in_two_folders_write_identical_bytes(tmp_path):
    # both folders hold one snapshot of the code (the checkout may change meanwhile)
    first = sandbox(tmp_path / "first", fast_config(), with_library=True)
    shutil.copytree(first, tmp_path / "second")
    digests = []
    for folder in (first, tmp_path / "second"):
        run_env = library_env(folder)
        run_env.pop("SOURCE_DATE_EPOCH", None)  # the date then comes from no checkout: none
        snakemake(folder, *local("all", "paper_numbers"), env=run_env, timeout=1800)
        digests.append(result_digests(folder))
    first, second = digests
    assert set(first) == set(second)
    kinds = {Path(p).suffix for p in first}
    assert {".nc", ".pdf", ".png", ".json", ".tex", ".sha256"} <= kinds, kinds
    assert "results/summary.nc" in first and "paper/output/claims.json" in first
    differ = sorted(p for p in first if first[p] != second[p])
    assert not differ, f"{len(differ)} of {len(first)} files differ: {differ}"
    print(f"{len(first)} files byte-identical")
