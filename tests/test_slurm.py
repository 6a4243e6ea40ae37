"""The SLURM profiles: dry runs without SLURM, and real runs on a private single-node SLURM.

The end-to-end tests start munged, slurmctld and slurmd on 127.0.0.1 (see
``tests/slurm_cluster.py``); they need root and Debian's ``munge`` and ``slurm-wlm``
packages (``.ci/run`` installs them) and are skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster

REPO = Path(__file__).resolve().parents[1]
SLURM_PROFILE = REPO / "profiles" / "slurm"
GPU_PROFILE = REPO / "profiles" / "slurm-gpu"
#: programs of a SLURM installation; none may be found by the "no SLURM" dry runs
SLURM_PROGRAMS = {
    "sbatch", "squeue", "sacct", "sinfo", "scontrol", "srun", "scancel", "sacctmgr", "sshare",
    "salloc", "sstat", "sprio", "sreport", "sdiag", "strigger", "sattach", "sbcast",
    "scrontab", "sh5util", "seff", "slurmd", "slurmctld", "slurmstepd",
}
#: a status check a few seconds after submission keeps the tests short
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "2"]


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def path_without_slurm(folder: Path) -> str:
    """A PATH whose only folder links every program of the current PATH except SLURM's."""
    folder.mkdir(parents=True, exist_ok=True)
    dirs = os.environ.get("PATH", "").split(os.pathsep) + [os.path.dirname(sys.executable)]
    for d in dirs:
        if not d or not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            target = folder / entry.name
            if entry.name in SLURM_PROGRAMS or target.exists() or target.is_symlink():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    return str(folder)


TRIVIAL_SNAKEFILE = """
rule all:
    input: "gathered.txt"

rule work:
    output: "parts/{i}.txt"
    shell: 'echo "$(hostname) ${{SLURM_JOB_ID:-none}} {wildcards.i}" > {output}'

rule gather:
    input: expand("parts/{i}.txt", i=range(N_PARTS))
    output: "gathered.txt"
    shell: 'cat {input} > {output}; echo "${{SLURM_JOB_ID:-none}}" >> {output}'
"""


def trivial_workflow(folder: Path, n: int = 3) -> Path:
    """A three-rule workflow whose outputs record where and under which SLURM job they ran."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Snakefile").write_text(TRIVIAL_SNAKEFILE.replace("N_PARTS", str(n)))
    return folder


def run(cmd, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    res = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if res.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n"
            f"{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
        )
    return res


# ---------------------------------------------------------------------------------------
# dry runs: no SLURM needed
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", [SLURM_PROFILE, GPU_PROFILE], ids=["slurm", "slurm-gpu"])
def test_profile_dry_run_without_slurm(tmp_path, profile):
    """The profile parses and plans jobs on a machine where no SLURM program is on PATH."""
    wf = trivial_workflow(tmp_path / "wf")
    env = dict(os.environ, PATH=path_without_slurm(tmp_path / "bin"))
    env.pop("SLURM_CONF", None)
    assert shutil.which("sbatch", path=env["PATH"]) is None
    res = run(snakemake_cmd("-n", "--profile", str(profile)), cwd=wf, env=env, timeout=300)
    out = res.stdout + res.stderr
    assert re.search(r"^work\s+3$", out, re.M), out
    assert re.search(r"^total\s+5$", out, re.M), out


# ---------------------------------------------------------------------------------------
# a private SLURM cluster
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """munged + slurmctld + slurmd on 127.0.0.1, stopped by PID at teardown (also on failure)."""
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(f"cannot start a private SLURM: {reason}")
    try:
        c = slurm_cluster.start_cluster()
    except slurm_cluster.ClusterStartError as exc:
        pytest.skip(f"cannot start a private SLURM: {exc}")
    try:
        yield c
    finally:
        stopped = c.stop()
        print("\n".join(["SLURM daemons stopped:", *stopped]))
        shutil.rmtree(c.root, ignore_errors=True)


def slurm_job_ids(log: str) -> list[str]:
    """SLURM job ids the executor reported in snakemake's log."""
    return re.findall(r"submitted with SLURM jobid (\d+)", log)


@pytest.mark.slow
@pytest.mark.slurm
def test_trivial_workflow_runs_through_slurm(cluster, tmp_path):
    """Every job of a small workflow is an sbatch job of the private cluster, and completes."""
    wf = trivial_workflow(tmp_path / "wf")
    t0 = time.monotonic()
    res = run(
        snakemake_cmd("--profile", str(SLURM_PROFILE), *FAST_STATUS),
        cwd=wf, env=cluster.env(), timeout=600,
    )
    wall = time.monotonic() - t0
    log = res.stdout + res.stderr
    ids = slurm_job_ids(log)
    assert len(ids) == 4, log  # three `work` jobs and `gather`; `all` is local
    lines = [ln.split() for ln in (wf / "gathered.txt").read_text().splitlines()]
    job_of_part = {int(i): jid for _host, jid, i in lines[:3]}
    assert sorted(job_of_part) == [0, 1, 2]
    assert set(job_of_part.values()) | {lines[3][0]} == set(ids), (lines, ids)
    jobs = {j["job_id"]: j for j in cluster.jobs()}
    for jid in ids:
        assert jobs[jid]["state"] == "COMPLETED", jobs
        assert jobs[jid]["nodes"] == slurm_cluster.NODE
    print(f"\ntrivial workflow through SLURM in {wall:.1f} s; jobs:")
    for jid in ids:
        print(f"  {jid}: {jobs[jid]['comment']} on {jobs[jid]['nodes']} ({jobs[jid]['state']})")
