"""Run the real pipeline on a tiny configuration in a private folder.

:func:`sandbox` copies the Snakefile, ``workflow/``, the configurations, the profiles and
the manuscript sources into a folder and replaces its ``config.yaml`` by a small variant
of the default one, so runs neither see nor touch the checkout's ``results/`` and
``.snakemake/``.  :func:`snakemake` runs Snakemake there as a subprocess (its own process
group, so a test can interrupt it like a user or a batch system would).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from mfsym.pipeline.config import overlay

REPO = Path(__file__).resolve().parents[1]
COPIED = ("Snakefile", "workflow", "config.yaml", "config", "profiles", "paper",
          "requirements.lock")
IGNORED = shutil.ignore_patterns("__pycache__", "output", "build", "*.pdf", ".snakemake")

#: a grid that trains in seconds: one N, both inits, two seeds in one block
TINY = {
    "n_particles": [12],
    "seeds": [0, 1],
    "seeds_per_job": 2,
    "training": {"T": 4.0, "n_eval": 256, "n_snapshots": 4, "checkpoint_every": 0},
    "resources": {"train": {"threads": 1, "mem_mb": 500, "runtime": 10},
                  "metrics": {"threads": 1, "mem_mb": 500, "runtime": 10}},
    "deep": {"training": {"T": 2.0, "n_eval": 64}, "mlp": {"n_particles": [8, 16]},
             "resnet": {"particles_per_layer": [2, 4]}},
    "rotation": {
        "n_particles": [20], "seeds": [0, 1],
        "training": {"T": 2.0, "n_eval": 256, "n_snapshots": 4, "checkpoint_every": 0},
        "quadrature": {"points": [1, 2], "reference_points": 16, "N": 12, "seeds": [0],
                       "inits": ["SI"], "n_eval": 64,
                       "training": {"T": 2.0, "n_eval": 64, "n_snapshots": 2,
                                    "dtype": "float64", "checkpoint_every": 0}},
    },
    "saddle": {
        "n_particles": [20, 30], "seeds": [0, 1],
        "training": {"T": 2.0, "n_eval": 64, "n_snapshots": 5, "checkpoint_every": 0},
        "analysis": {"bootstrap": 20},
        "resources": {"threads": 1, "mem_mb": 500, "runtime": 10},
    },
    # the Noether seed's tangent-kernel study at three small N, the momentum at fewer K
    "noether": {"tangent": {"n_particles": [16, 64, 128]},
                "momentum": {"orbit_points": [1, 2, 4, 8, 16, 32, 64]}},
}


#: ``base`` with ``over`` merged in recursively (mappings merge, other values replace).
merged = overlay


def repo_config(name: str = "config.yaml") -> dict:
    """A configuration file of the checkout (config.yaml, config/paper.yaml)."""
    return yaml.safe_load((REPO / name).read_text())


def tiny_config(overrides: Mapping | None = None) -> dict:
    """The checkout's config.yaml with :data:`TINY` and ``overrides`` merged in."""
    return merged(merged(repo_config(), TINY), overrides or {})


def sandbox(dest: Path, config: Mapping, with_library: bool = False) -> Path:
    """A copy of the pipeline in ``dest`` whose config.yaml is ``config``; with
    ``with_library``, also a copy of the library in ``dest/src`` (run with
    :func:`library_env`, so that edits to the checkout during the run change nothing)."""
    dest.mkdir(parents=True, exist_ok=True)
    names = (*COPIED, "src/mfsym") if with_library else COPIED
    for name in names:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORED, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return dest


def library_env(folder: Path, **extra: str) -> dict[str, str]:
    """The environment that imports mfsym from ``folder/src`` (see :func:`sandbox`)."""
    return {**os.environ, "PYTHONPATH": str(folder / "src"), **extra}


def snakemake_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def snakemake(
    folder: Path, *args: str, env: Mapping | None = None, timeout: float = 900,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run Snakemake in ``folder``; raise with its output if it fails and ``check`` is set."""
    res = subprocess.run(
        snakemake_argv(*args), cwd=folder, env=None if env is None else dict(env),
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    if check and res.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({res.returncode}) in {folder}:\n"
            f"{res.stdout[-3000:]}\n{res.stderr[-8000:]}"
        )
    return res


def local(*args: str) -> tuple[str, ...]:
    """Arguments of a plain local run that ignores the workstation profile."""
    return ("--workflow-profile", "none", "--cores", "2", *args)


def start_snakemake(folder: Path, *args: str, log: Path) -> subprocess.Popen:
    """Start Snakemake in the background as the leader of a new process group."""
    out = open(log, "wb")  # noqa: SIM115 (handed to the child)
    try:
        return subprocess.Popen(
            snakemake_argv(*args), cwd=folder, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def wait_until(cond: Callable[[], bool], proc: subprocess.Popen, timeout: float, what: str):
    """Poll ``cond`` until true; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"snakemake exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def signal_group(proc: subprocess.Popen, sig: int, timeout: float = 120) -> int:
    """Send ``sig`` to the process group led by ``proc`` and wait for the leader to exit."""
    os.killpg(proc.pid, sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30)


def assert_same_data(a: Path, b: Path) -> list[str]:
    """Every data variable and coordinate of two datasets is identical (NaN equals NaN).

    Attributes are not compared (they carry provenance such as timestamps).  Returns the
    names of the variables compared.
    """
    with xr.open_dataset(a) as da, xr.open_dataset(b) as db:
        assert set(da.data_vars) == set(db.data_vars), (sorted(da.data_vars), sorted(db.data_vars))
        assert set(da.coords) == set(db.coords)
        for name in da.coords:
            assert np.array_equal(da[name].values, db[name].values), name
        for name in da.data_vars:
            x, y = da[name], db[name]
            assert x.dims == y.dims, name
            if np.issubdtype(x.dtype, np.floating):
                assert np.array_equal(x.values, y.values, equal_nan=True), name
            else:
                assert np.array_equal(x.values, y.values), name
        return sorted(da.data_vars)


def clone(src: Path, dest: Path) -> Path:
    """A copy of a sandbox (files, metadata and Snakemake's state) at ``dest``."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def garble(path: Path) -> None:
    """Eight bytes in the middle of the file overwritten (the size stays the same)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = b"\xde\xad\xbe\xef" * 2
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    """The first half of the file only (a torn write, a full disk)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def scramble(path: Path) -> None:
    """Same size, garbage content (a bad disk block)."""
    size = path.stat().st_size
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
