"""Two runs of the pipeline from scratch, in two folders, write the same bytes.

Each run uses its own copy of the library (so edits to the checkout meanwhile change
nothing) and a tiny grid with small heuristic and Noether studies
(``pipeline_sandbox.SMALL_STUDIES``); the two run at the same time.  Every file under
results/ and paper/output/ is compared by SHA-256, the logs and benchmark timings aside
(``pipeline_sandbox.result_digests``, taken as each run left its folder).
The first run is also the one whose manuscript ``test_paper.py`` checks, and it alone
builds the PDF, which writes nothing under results/ or paper/output/ that the second run
does not write too; ``test_pipeline.py`` checks the second (fixtures in ``conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.xdist_group("default_target")
def test_two_runs_from_scratch_in_two_folders_write_identical_bytes(
    default_target_runs, default_target_run, second_default_target_run
):
    # both folders hold one snapshot of the code (the checkout may change meanwhile); the
    # digests are those of the files as each run left them
    first = default_target_runs.digests[default_target_run]
    second = default_target_runs.digests[second_default_target_run]
    assert set(first) == set(second), sorted(set(first) ^ set(second))
    kinds = {Path(p).suffix for p in first}
    assert {".nc", ".pdf", ".png", ".json", ".tex", ".sha256"} <= kinds, kinds
    assert "results/summary.nc" in first and "paper/output/claims.json" in first
    differ = sorted(p for p in first if first[p] != second[p])
    assert not differ, f"{len(differ)} of {len(first)} files differ: {differ}"
    print(f"{len(first)} files byte-identical")
