"""Every job uses exactly the threads its rule gives it: torch, OpenMP and BLAS pools
(read back with threadpoolctl), the native kernels included."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mfsym.records.threads import ENV_VARS, MAX_THREADS, limit_threads

#: What a job reports of its pools: torch's, every library threadpoolctl finds, the env.
REPORT = textwrap.dedent("""
    import json, os, numpy, torch
    from threadpoolctl import threadpool_info
    from mfsym.core.units import make_unit
    from mfsym.engine import native
    native.load_library(make_unit("matrix", 2, 2, "sigmoid"), torch.float32)
    numpy.ones((64, 64)) @ numpy.ones((64, 64))
    def report():
        return {"torch": torch.get_num_threads(),
                "pools": {f"{p['internal_api']}:{os.path.basename(p['filepath'])}":
                          p["num_threads"] for p in threadpool_info()},
                "env": {v: os.environ.get(v) for v in ENV_VARS}}
""") + f"ENV_VARS = {ENV_VARS!r}\n"


def run_python(code: str, **env) -> dict:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


@pytest.mark.parametrize("n", [1, 3])
def test_limit_threads_sets_torch_openmp_and_blas_pools(n):
    """Libraries loaded before the call (numpy's BLAS, torch's OpenMP, the kernel's) and
    the environment for later ones all hold n, whatever the machine's core count."""
    got = run_python(REPORT + f"from mfsym.records.threads import limit_threads\n"
                     f"limit_threads({n})\nprint(json.dumps(report()))")
    assert got["torch"] == n
    assert got["pools"], "threadpoolctl found no thread pool to check"
    assert any(k.startswith("openmp") for k in got["pools"]), got["pools"]
    assert set(got["pools"].values()) == {n}, got["pools"]
    assert set(got["env"].values()) == {str(n)}, got["env"]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2", 257, 2768])
def test_limit_threads_refuses_what_is_not_a_thread_count(bad):
    """Above 256 too: torch's OpenMP runtime ends the process (exit status 1, a line on
    stderr) when it cannot start the threads asked for, as under an address-space limit."""
    with pytest.raises(ValueError, match=f"threads must be a whole number from 1 to 256, "
                                         f"got {bad!r}"):
        limit_threads(bad)


SNAKEFILE = """
rule all:
    input: "one.json", "two.json"

rule one:
    output: "one.json"
    log: "one.log"
    threads: 1
    script: "report.py"

rule two:
    output: "two.json"
    log: "two.log"
    threads: 2
    script: "report.py"
"""


def test_a_snakemake_job_uses_the_threads_of_its_rule(tmp_path):
    """Two jobs of a real Snakemake run on 2 cores, with ``threads: 1`` and ``threads: 2``:
    each job's torch, OpenMP and BLAS pools hold its rule's number, not the machine's.
    (Snakemake exports the thread variables to its jobs too; the job's log shows the
    library set them as well, which is what counts where no such runner does.)"""
    pytest.importorskip("snakemake")
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    clean = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    (tmp_path / "report.py").write_text(
        REPORT + "from mfsym.records.joblog import script_log\n"
        "with script_log(snakemake):\n"
        "    json.dump(report(), open(snakemake.output[0], 'w'))\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--quiet", "all"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=clean,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    for name, n in (("one", 1), ("two", 2)):
        got = json.loads((tmp_path / f"{name}.json").read_text())
        assert got["torch"] == n, got
        assert set(got["pools"].values()) == {n}, (name, got["pools"])
        assert f"threads: {n} (torch, OpenMP, BLAS)" in (tmp_path / f"{name}.log").read_text()


def test_the_thread_bound_is_the_native_team_size():
    """MAX_THREADS is the C kernels' TEAM_MAX: a count the team cannot hold is refused
    before it reaches the kernel, and no count the team can hold is refused."""
    src = (Path(__file__).resolve().parents[1] / "src" / "mfsym" / "engine" / "csrc"
           / "mfsym_kernel.c").read_text()
    team_max = re.search(r"^#define TEAM_MAX (\d+)$", src, re.MULTILINE)
    assert team_max is not None
    assert int(team_max.group(1)) == MAX_THREADS
