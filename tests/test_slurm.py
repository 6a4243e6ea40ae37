"""The SLURM profiles: dry runs without SLURM, and a real run on a private single-node SLURM.

The end-to-end test starts munged, slurmctld and slurmd on 127.0.0.1 (see
``tests/slurm_cluster.py``); it needs root and Debian's ``munge`` and ``slurm-wlm``
packages (``.ci/run`` installs them) and is skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster
from pipeline_sandbox import (
    assert_same_data,
    local,
    repo_config,
    sandbox,
    snakemake,
    start_snakemake,
    tiny_config,
)

#: programs of a SLURM installation; none may be found by the "no SLURM" dry runs
SLURM_PROGRAMS = {
    "sbatch", "squeue", "sacct", "sinfo", "scontrol", "srun", "scancel", "sacctmgr", "sshare",
    "salloc", "sstat", "sprio", "sreport", "sdiag", "strigger", "sattach", "sbcast",
    "scrontab", "sh5util", "seff", "slurmd", "slurmctld", "slurmstepd",
}
#: a first status check a few seconds after submission keeps the test short
FAST_STATUS = ("--slurm-init-seconds-before-status-checks", "2")
SUMMARY = "results/summary.nc"

#: the profiles name Snakemake's SLURM executor, which only the ``cluster`` extra installs
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="needs snakemake-executor-plugin-slurm: pip install -e '.[cluster]'",
)


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


def job_counts(out: str) -> dict[str, int]:
    """The "Job stats" table of a dry run, as {rule: count}."""
    table = out[out.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def train_batches(out: str) -> list[tuple[str, int]]:
    """(group id, number of training jobs) of every group job (submission) of a dry run.

    A group job is a header line "[date] Group job <id> ..." followed by the indented
    listing of its jobs.
    """
    batches = []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        header = re.search(r"\] Group job (\S+)", line)
        if not header:
            continue
        n = 0
        for body in lines[i + 1:]:
            if body and not body.startswith(" "):
                break
            n += bool(re.match(r"\s+rule train:", body))
        batches.append((header[1], n))
    return batches


def train_resources(out: str) -> list[str]:
    """The resources line of every train job in a dry run."""
    return re.findall(r"rule train:\n(?:\s+\w+: .*\n)*?\s+resources: (.*)", out)


# ---------------------------------------------------------------------------------------
# dry runs: no SLURM needed
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def no_slurm_env(tmp_path_factory):
    env = dict(os.environ, PATH=path_without_slurm(tmp_path_factory.mktemp("noslurm")))
    env.pop("SLURM_CONF", None)
    assert shutil.which("sbatch", path=env["PATH"]) is None
    return env


@pytest.mark.parametrize("configfile", ["config.yaml", "config/paper.yaml"])
def test_slurm_profile_dry_run_without_slurm(tmp_path, no_slurm_env, configfile):
    """The SLURM profile plans the whole grid on a machine with no SLURM program on PATH:
    one training job per init × N × seed block, batched into groups of training jobs."""
    wf = sandbox(tmp_path / "wf", repo_config())
    res = snakemake(
        wf, "-n", "--workflow-profile", "profiles/slurm", "--configfile", configfile,
        env=no_slurm_env, timeout=600,
    )
    out = res.stdout + res.stderr
    cfg = repo_config(configfile)
    blocks = -(-len(cfg["seeds"]) // cfg["seeds_per_job"])
    n_train = len(cfg["inits"]) * len(cfg["n_particles"]) * blocks
    counts = job_counts(out)
    assert counts["train"] == n_train, counts
    assert counts["metrics"] == n_train, counts
    # one batch per N holding all its training jobs (inits × seed blocks)
    batches = train_batches(out)
    expected = sorted(f"train_N{n}" for n in cfg["n_particles"])
    assert sorted(g for g, _ in batches) == expected, batches
    assert {n for _, n in batches} == {len(cfg["inits"]) * blocks}, batches
    assert all("gpu=0" in r for r in train_resources(out))  # CPU training: no GPU asked


def test_gpu_profile_dry_run_asks_a_gpu_per_training_job(tmp_path, no_slurm_env):
    """The GPU profile switches training to CUDA, so every training job asks for a GPU
    (and is submitted alone, not batched)."""
    wf = sandbox(tmp_path / "wf", tiny_config({"n_particles": [8, 16], "seeds": [0, 1, 2]}))
    res = snakemake(wf, "-n", "--workflow-profile", "profiles/slurm-gpu", env=no_slurm_env)
    out = res.stdout + res.stderr
    n_train = 2 * 2 * 2  # inits × N × seed blocks of 2
    assert job_counts(out)["train"] == n_train
    resources = train_resources(out)
    assert len(resources) == n_train
    assert all(re.search(r"\bgpu=1\b", r) for r in resources), resources
    assert train_batches(out) == [("train", 1)] * n_train  # one training job per submission


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


def submissions(log: str) -> dict[str, str]:
    """{SLURM job id: what Snakemake submitted} from the executor's log lines."""
    pattern = r"Job (\S+) has been submitted with SLURM jobid (\d+)"
    return {m[2]: m[1] for m in re.finditer(pattern, log)}


@pytest.mark.slow
@pytest.mark.slurm
def test_tiny_grid_through_slurm_matches_a_local_run(cluster, tmp_path):
    """A tiny grid run through profiles/slurm on the private cluster gives exactly the
    summary.nc of a local run of the same configuration; every job ran as a SLURM job."""
    cfg = tiny_config()
    on_slurm = sandbox(tmp_path / "slurm", cfg)
    at_home = sandbox(tmp_path / "local", cfg)
    local_log = tmp_path / "local.log"
    local_run = start_snakemake(at_home, *local(SUMMARY), log=local_log)
    t0 = time.monotonic()
    try:
        res = snakemake(
            on_slurm, "--workflow-profile", "profiles/slurm", *FAST_STATUS, SUMMARY,
            env=cluster.env(), timeout=1500,
        )
    finally:
        rc = local_run.wait(timeout=1500)
    wall = time.monotonic() - t0
    assert rc == 0, local_log.read_text()[-6000:]
    log = res.stdout + res.stderr
    compared = assert_same_data(on_slurm / SUMMARY, at_home / SUMMARY)
    assert {"rmd_projected", "rmd_between", "population_risk", "risk_curve"} <= set(compared)

    jobs = {j["job_id"]: j for j in cluster.jobs()}
    submitted = submissions(log)
    print(f"\ntiny grid through SLURM in {wall:.0f} s ({len(submitted)} SLURM jobs):")
    for jid in sorted(submitted, key=int):
        j = jobs[jid]
        print(f"  job {jid}: {j['comment']} on {j['nodes']} ({j['cpus']} CPU, {j['memory']}), "
              f"{j['state']}, ran {j['time']}")
    assert submitted and all(jobs[j]["state"] == "COMPLETED" for j in submitted), jobs
    assert all(jobs[j]["nodes"] == slurm_cluster.NODE for j in submitted)
    # teachers, eval_sample, 2 × initial_particles, 1 batch of the 2 training jobs,
    # 2 × metrics, summary: every job of the DAG was an sbatch job
    assert len(submitted) == 8, submitted
    # both training jobs ran side by side in one SLURM job holding the sum of their CPUs
    batches = [jobs[j] for j in submitted if "train" in jobs[j]["comment"]]
    assert len(batches) == 1, batches
    assert int(batches[0]["cpus"]) == 2 * cfg["resources"]["train"]["threads"]
    assert len(list((on_slurm / "results" / "runs").rglob("*.nc"))) == 2
