"""benchmarks/gpu_check.sh: its exit status tells a missing GPU from an unusable one, and
its stages run in a bare environment (torch, numpy, xarray, scipy and pytest only, the
package not installed), as on the GPU machines it is written for."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
GPU_LINE = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
#: what the GPU machines have; nothing else may be needed by the check
BARE = ("torch", "numpy", "xarray", "scipy", "pytest")


def run_check(tmp_path: Path, nvidia_smi: str | None, *args: str,
              python3: str = f'exec "{sys.executable}" "$@"') -> subprocess.CompletedProcess:
    """The check with CUDA hidden from torch, python3 the shell script ``python3`` (this
    interpreter) and on PATH a fake nvidia-smi printing ``nvidia_smi`` (None: no fake)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(f"#!/bin/sh\n{python3}\n")
    if nvidia_smi is not None:
        (fake / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '%s' '{nvidia_smi}'\n")
    for exe in fake.iterdir():
        exe.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
           "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_a_gpu_torch_cannot_use_fails_and_says_why(tmp_path):
    done = run_check(tmp_path, GPU_LINE + "\n")
    assert done.returncode != 0, done.stdout
    assert "nvidia-smi lists a GPU that torch cannot use" in done.stderr
    assert GPU_LINE in done.stderr
    assert f"torch {torch.__version__} (torch.version.cuda {torch.version.cuda})" in (
        done.stdout + done.stderr)
    assert "CUDA tests" not in done.stdout  # no stage ran


def test_nvidia_smi_listing_no_gpu_means_no_gpu(tmp_path):
    done = run_check(tmp_path, "No devices were found\n")
    assert done.returncode == 0, done.stderr
    assert "gpu_check: no GPU" in done.stdout
    assert "ns per particle-sample update" not in done.stdout  # nothing was timed


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="nvidia-smi is on PATH")
def test_without_nvidia_smi_there_is_no_gpu(tmp_path):
    done = run_check(tmp_path, None)
    assert done.returncode == 0, done.stderr
    assert "gpu_check: no GPU" in done.stdout


def test_a_python_without_torch_fails_and_says_so(tmp_path):
    no_torch = "echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1"
    done = run_check(tmp_path, GPU_LINE, python3=no_torch)
    assert done.returncode != 0
    assert "python3 cannot import torch" in done.stderr


def test_a_failing_stage_fails_the_check(tmp_path):
    """The timing stage refuses a step count that is not a number: the check exits non-zero
    after the tests' stage has passed, and never prints its done line."""
    done = run_check(tmp_path, None, "--cpu-dry-run", "many")
    assert done.returncode != 0, done.stdout
    assert " passed" in done.stdout
    assert "--steps: invalid int value: 'many'" in done.stderr
    assert "gpu_check: done" not in done.stdout


def pip_install(python: Path, *reqs: str) -> None:
    """Install into a venv, or skip the test when the packages cannot be had here."""
    try:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile",
                        "--disable-pip-version-check", *reqs],
                       capture_output=True, text=True, check=True, timeout=900)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot install {' '.join(reqs)} (no network?): {err.stderr[-500:]}")


@pytest.mark.slow
def test_cpu_dry_run_in_a_bare_venv_runs_every_stage(tmp_path):
    """A venv holding only the GPU machines' packages and a copy of the working tree: the
    dry run needs nothing else (no hypothesis, yaml, snakemake, netCDF4, POT, ...)."""
    venv = tmp_path / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300,
                       capture_output=True, text=True)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"python3 -m venv failed: {err.stderr[-500:]}")
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    torch_version = importlib.metadata.version("torch").split("+")[0]
    pip_install(python, f"torch=={torch_version}", *BARE[1:])
    extras = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print([m for m in ('mfsym', "
         "'hypothesis', 'yaml', 'snakemake', 'netCDF4', 'ot', 'jsonschema', 'matplotlib', "
         "'seaborn', 'threadpoolctl', 'xdist') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=env,
    ).stdout.strip()
    assert extras == "[]", f"the venv is not bare: {extras}"

    tree = tmp_path / "tree"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
                           ).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)

    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu-dry-run"], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert done.stdout.rstrip().endswith("gpu_check: done"), out[-3000:]
    assert re.search(r"^\d+ passed, \d+ skipped, \d+ deselected", done.stdout, re.M), out
    assert "ns per particle-sample update (120 runs, N = 40, B = 20, cpu)" in done.stdout
