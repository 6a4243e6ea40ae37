"""Fault injection on the real pipeline: nothing lost, nothing silently wrong, no hang.

Each test runs Snakemake on a tiny grid in a private folder (see ``pipeline_sandbox``) and
injects one fault a user or a machine produces: a garbled or truncated result file, a full
disk, a second ``snakemake`` on the same checkout, two checkouts building the same kernel
into one empty cache at the same moment.  Interrupted training (SIGTERM, SIGKILL, damaged
checkpoints) is covered by ``test_faults_interrupt.py``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pipeline_sandbox import (
    assert_same_data,
    clone,
    garble,
    local,
    sandbox,
    signal_group,
    snakemake,
    start_snakemake,
    tiny_config,
    truncate,
    wait_until,
)

from mfsym.records.atomic import checksum_path, verify_file

pytestmark = pytest.mark.slow

SUMMARY = "results/summary.nc"
RUN = "results/runs/SI/N12/b0.nc"
#: a damaged file, and the rule whose rerun must read it: the job fails fast naming it
DAMAGED = {
    "data": ("results/data/eval_sample.nc", "train"),
    "runs": (RUN, "metrics"),
    "metrics": ("results/metrics/SI/N12/b0.nc", "summary"),
}
#: a job that reads a damaged input fails within this many seconds (HDF5 never sees it)
FAIL_FAST_S = 10


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A sandbox whose tiny grid (training, metrics, summary) has run to the end."""
    wf = sandbox(tmp_path_factory.mktemp("finished") / "wf", tiny_config())
    snakemake(wf, *local(SUMMARY))
    return wf


@pytest.mark.parametrize("damage", [garble, truncate], ids=["garbled", "truncated"])
@pytest.mark.parametrize("kind", sorted(DAMAGED))
@pytest.mark.xdist_group("faults_finished")  # one worker, one finished grid for all cases
def test_a_damaged_input_fails_its_job_fast_naming_the_file(finished, tmp_path, kind, damage):
    """The rerun of the job that reads a damaged file fails within seconds, its log names
    the file and says its checksum does not match; nothing downstream is rewritten."""
    wf = clone(finished, tmp_path / "wf")
    rel, rule = DAMAGED[kind]
    damage(wf / rel)
    before = (wf / SUMMARY).read_bytes()
    res = snakemake(wf, *local(SUMMARY, "--forcerun", rule), check=False, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    logs = "".join(p.read_text() for p in (wf / "results" / "logs").rglob("*.log")
                   if p.name.startswith(rule) or rule in p.parts)
    assert Path(rel).name in logs and "checksum" in logs.lower(), logs[-3000:]
    failed = [float(s) for s in re.findall(rf"failed {rule}\b.* after ([0-9.]+) s", logs)]
    assert failed and max(failed) < FAIL_FAST_S, logs[-3000:]
    # nothing downstream is written from it: the summary is the old one or gone
    assert not (wf / SUMMARY).exists() or (wf / SUMMARY).read_bytes() == before


def test_a_second_snakemake_on_the_same_checkout_is_refused(tmp_path):
    """While one `snakemake` trains (a long run, stopped by the test), a second one in the
    same folder stops at once with Snakemake's lock error and writes nothing."""
    wf = sandbox(tmp_path / "wf", tiny_config({"n_particles": [200], "seeds": [0],
                                               "seeds_per_job": 1, "inits": ["SI"],
                                               "training": {"T": 5000.0}}))
    first = start_snakemake(wf, *local(SUMMARY), log=tmp_path / "first.log")
    try:
        wait_until(lambda: any((wf / "results" / "logs" / "train").rglob("*.log")), first,
                   timeout=300, what="the first training job")
        second = snakemake(wf, *local(SUMMARY), check=False, timeout=300)
        assert first.poll() is None, "the first run must still hold the lock"
        assert second.returncode != 0
        assert "cannot be locked" in second.stdout + second.stderr, second.stderr[-2000:]
    finally:
        signal_group(first, signal.SIGTERM)
    assert not (wf / RUN).exists() and not (wf / SUMMARY).exists()


def test_two_checkouts_share_one_empty_kernel_cache(tmp_path):
    """Two checkouts started together with one empty kernel cache: both build or load the
    native kernel concurrently, both finish, and their results are identical."""
    cache = tmp_path / "kernels"
    cfg = tiny_config({"training": {"backend": "native"}})
    env = dict(os.environ, MFSYM_KERNEL_CACHE=str(cache))
    folders = [sandbox(tmp_path / name, cfg) for name in ("one", "two")]
    procs = [
        subprocess.Popen(["python3", "-m", "snakemake", *local(SUMMARY)], cwd=wf, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for wf in folders
    ]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outs]
    compared = assert_same_data(folders[0] / SUMMARY, folders[1] / SUMMARY)
    assert "rmd_projected" in compared
    assert_same_data(folders[0] / RUN, folders[1] / RUN)
    assert list(cache.rglob("*.so")), "the shared cache holds the built kernel"
    for wf in folders:
        log = "".join(p.read_text() for p in (wf / "results" / "logs" / "train").rglob("*.log"))
        assert "WARNING" not in log, log[-2000:]  # no fallback, no rebuild of a bad file


def tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True, check=False)
    return res.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_leaves_no_complete_looking_file(tmp_path):
    """``results_dir`` on a 300 KiB tmpfs: the run fails naming a file and 'No space left
    on device'; every result file that exists has a matching checksum (a partial file is
    never left looking complete) and no staging file remains."""
    results = tmp_path / "small"
    if not tmpfs(results, "300k"):
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        wf = sandbox(tmp_path / "wf", tiny_config({"results_dir": str(results)}))
        res = snakemake(wf, *local("--keep-going", str(results / "summary.nc")), check=False,
                        timeout=900)
        out = res.stdout + res.stderr
        logs = "".join(p.read_text(errors="replace") for p in results.rglob("*.log"))
        assert res.returncode != 0, out[-3000:]
        assert "No space left on device" in out + logs, (out + logs)[-4000:]
        found = [p for p in results.rglob("*.nc")]
        for path in found:
            verify_file(path)  # raises on a partial or mismatching file
        leftovers = [p for p in results.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, leftovers
        assert all(checksum_path(p).exists() for p in found)
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)


def test_garbling_is_not_a_no_op(tmp_path):
    """The damage helpers change bytes (so the tests above test something)."""
    path = tmp_path / "f.bin"
    payload = np.arange(64, dtype=np.uint8).tobytes()
    path.write_bytes(payload)
    garble(path)
    assert path.read_bytes() != payload and path.stat().st_size == len(payload)
    truncate(path)
    assert path.stat().st_size == len(payload) // 2
