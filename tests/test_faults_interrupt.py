"""Interrupted training jobs of the pipeline resume from their checkpoint, bit for bit.

The train rule checkpoints every ``training.checkpoint_every`` steps under
``results/checkpoints/`` (not an output: it survives a failed job) and deletes it after
success.  These tests interrupt the real pipeline while a training job runs — the way a
user (Ctrl-C, SIGTERM) or a batch system (SIGKILL at the wall-time limit, a lost node)
would — rerun it, and compare with an uninterrupted run.  A damaged checkpoint must be
reported and skipped (previous checkpoint, else a fresh start), never trusted.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import numpy as np
import pytest
from pipeline_sandbox import (
    assert_same_data,
    clone,
    local,
    sandbox,
    scramble,
    signal_group,
    snakemake,
    start_snakemake,
    tiny_config,
    truncate,
    wait_until,
)

from mfsym.records.atomic import ChecksumError, verify_file

#: every test resumes against the same uninterrupted run: one worker runs them all
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("faults_interrupt")]

#: one training job (init SI, N = 100, one seed) of N·T = 2000 steps, checkpointed every 256
CONFIG = {
    "inits": ["SI"],
    "n_particles": [100],
    "seeds": [0],
    "seeds_per_job": 1,
    "training": {"T": 20.0, "checkpoint_every": 256, "n_snapshots": 6},
}
STEPS = 2000
JOB = "SI/N100/b0"
RUN = f"results/runs/{JOB}.nc"
SUMMARY = "results/summary.nc"
CKPT = f"results/checkpoints/{JOB}.npz"
PREV = f"results/checkpoints/{JOB}.prev.npz"
STAGED = f"results/checkpoints/{JOB}.new.npz"
TRAIN_LOG = f"results/logs/train/{JOB}.log"
DATA = ("results/data/teachers.nc", "results/data/eval_sample.nc",
        f"results/data/initial/{JOB}.nc")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A sandbox whose training inputs are built (copied by each test, with its metadata)."""
    wf = sandbox(tmp_path_factory.mktemp("prepared") / "wf", tiny_config(CONFIG))
    snakemake(wf, *local(*DATA))
    return wf


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> Path:
    """The uninterrupted run of the same configuration (run file and summary)."""
    wf = clone(prepared, tmp_path_factory.mktemp("reference") / "wf")
    snakemake(wf, *local(SUMMARY))
    assert not (wf / CKPT).exists()  # deleted after success
    return wf


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint file was written at (its ``counters`` entry)."""
    with np.load(path, allow_pickle=False) as ck:
        return int(ck["counters"][0])


def assert_plain_arrays(path: Path) -> None:
    """Every entry of the checkpoint loads without pickle and is a plain (non-object) array."""
    with np.load(path, allow_pickle=False) as ck:
        assert "counters" in ck.files and len(ck.files) > 3, ck.files
        for name in ck.files:
            assert ck[name].dtype != object, name


def start_and_interrupt(wf: Path, target: str, sig: int, log: Path) -> tuple[int, int]:
    """Start snakemake, wait until the training job has written two checkpoints, send
    ``sig`` to snakemake's whole process group; return (exit code, newest checkpoint step)."""
    proc = start_snakemake(wf, *local(target), log=log)
    try:
        wait_until(lambda: (wf / PREV).exists() and (wf / CKPT).exists(), proc, timeout=600,
                   what="a second checkpoint")
    except BaseException:
        signal_group(proc, signal.SIGKILL)
        raise
    rc = signal_group(proc, sig)
    # the signal may land while a newer checkpoint is staged (``.new``) before its rename,
    # or after a rename but before its sidecar: the loader trusts only verified files, so
    # the step a rerun must reach is that of the newest one that verifies
    newest = [checkpoint_step(p) for p in (wf / CKPT, wf / STAGED, wf / PREV) if verified(p)]
    return rc, max(newest)


def verified(path: Path) -> bool:
    """Whether a checkpoint file exists and matches its ``.sha256`` sidecar."""
    try:
        verify_file(path)
    except ChecksumError:  # also raised for a missing file or sidecar
        return False
    return True


def resumed_steps(log_text: str) -> list[int]:
    return [int(s) for s in re.findall(r"resumed at step (\d+)", log_text)]


def test_sigterm_to_snakemake_then_rerun_incomplete_gives_the_uninterrupted_result(
    prepared, reference, tmp_path
):
    """SIGTERM to the process group of a running `snakemake` while it trains: the job
    stops, its checkpoint stays; `--rerun-incomplete` resumes it and the summary is
    identical to that of an uninterrupted run."""
    wf = clone(prepared, tmp_path / "wf")
    rc, step = start_and_interrupt(wf, SUMMARY, signal.SIGTERM, tmp_path / "first.log")
    first = (tmp_path / "first.log").read_text()
    assert rc != 0, first[-3000:]
    assert not (wf / RUN).exists()
    assert not (wf / SUMMARY).exists()
    assert ((wf / CKPT).exists() or (wf / STAGED).exists()) and 0 < step < STEPS
    assert_plain_arrays(wf / CKPT)

    res = snakemake(wf, *local("--rerun-incomplete", SUMMARY))
    log = (wf / TRAIN_LOG).read_text()
    resumed = resumed_steps(log)
    assert resumed and resumed[-1] >= step, log[-3000:]
    # Snakemake deleted the log before the rerun: the stopped attempt is still above
    assert log.count("start train") == 2 and "stopped by signal SIGTERM" in log, log[-3000:]
    assert "Finished" in res.stdout + res.stderr
    assert not (wf / CKPT).exists() and not (wf / PREV).exists()
    assert_same_data(wf / RUN, reference / RUN)
    compared = assert_same_data(wf / SUMMARY, reference / SUMMARY)
    assert "rmd_projected" in compared and "rmd_between" in compared
    print(f"\ninterrupted at checkpoint step {step}, resumed at step {resumed[-1]} of {STEPS}")


@pytest.mark.parametrize("damage", ["newest truncated", "both damaged"])
def test_killed_job_skips_damaged_checkpoints_and_ends_identical(
    prepared, reference, tmp_path, damage
):
    """SIGKILL (wall-time limit, lost node) during training, then a damaged checkpoint:
    the rerun reports it, falls back to the previous one (or starts afresh when that is
    damaged too) and writes exactly the uninterrupted result."""
    wf = clone(prepared, tmp_path / "wf")
    rc, newest = start_and_interrupt(wf, RUN, signal.SIGKILL, tmp_path / "first.log")
    assert rc == -signal.SIGKILL
    assert not (wf / RUN).exists()
    previous = checkpoint_step(wf / PREV)
    # equal when the kill lands after the newest checkpoint's rename, before its sidecar:
    # then only .prev verifies, and the damaged newest is skipped all the same
    assert 0 < previous <= newest and (wf / CKPT).exists()
    # a kill between writing the staged checkpoint and its rename leaves a complete
    # ``.new``: the loader tries it first and resumes from it, damaging nothing it needs
    staged = checkpoint_step(wf / STAGED) if verified(wf / STAGED) else None
    truncate(wf / CKPT)
    if damage == "both damaged":
        scramble(wf / PREV)

    snakemake(wf, *local("--unlock"))  # a killed snakemake leaves its lock behind
    snakemake(wf, *local("--rerun-incomplete", RUN))
    log = (wf / TRAIN_LOG).read_text()
    skipped = re.findall(r"skipping checkpoint: (.*)", log)
    resumed = resumed_steps(log)
    assert log.count("start train") == 2 and "has no done or failed line" in log, log[-3000:]
    if staged is not None:
        assert skipped == [] and resumed == [staged], log[-3000:]
    elif damage == "newest truncated":
        assert len(skipped) == 1 and "unreadable" in skipped[0], log[-3000:]
        assert resumed == [previous], log[-3000:]
    else:
        assert len(skipped) == 2, log[-3000:]
        assert resumed == [], log[-3000:]  # a fresh start
    assert not (wf / CKPT).exists() and not (wf / PREV).exists()
    assert_same_data(wf / RUN, reference / RUN)
    print(f"\n{damage}: checkpoints at steps {previous} and {newest}; skipped {len(skipped)}, "
          f"resumed at {resumed or 'step 0 (fresh start)'}")
