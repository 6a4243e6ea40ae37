"""Run the real pipeline on a tiny configuration in a private folder.

:func:`sandbox` copies the Snakefile, ``workflow/``, the configurations, the profiles and
the manuscript sources into a folder and replaces its ``config.yaml`` by a small variant
of the default one, so runs neither see nor touch the checkout's ``results/`` and
``.snakemake/``.  :func:`snakemake` runs Snakemake there as a subprocess (its own process
group, so a test can interrupt it like a user or a batch system would).
"""

from __future__ import annotations

import hashlib
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


#: :data:`TINY` with two widths (so that the manuscript's slopes exist) and small heuristic
#: and Noether studies, so that the whole default target and the manuscript run in minutes
SMALL_STUDIES = {
    "n_particles": [6, 12],
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
#: what every run of :class:`DefaultTargetRuns` builds: the default target and the
#: manuscript's numbers (claims.json, numbers.tex, claims.tex)
DEFAULT_TARGETS = ("all", "paper_numbers")


#: run-time records, not results: they differ between any two runs
TIMING = ("logs", "benchmarks")


def result_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under results/ and paper/output/, logs and timings aside."""
    out = {}
    for sub in ("results", "paper/output"):
        for path in sorted((folder / sub).rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and not (rel.parts[0] == "results" and rel.parts[1] in TIMING):
                out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class DefaultTargetRuns:
    """Two runs from scratch of :data:`DEFAULT_TARGETS` on the :data:`SMALL_STUDIES`
    configuration, in two folders holding one snapshot of the pipeline and the library.

    The first run also builds the manuscript (``paper``) when ``with_paper`` is set; the
    second builds exactly :data:`DEFAULT_TARGETS`.  Runs that :meth:`start` starts run at
    the same time; :meth:`result` waits for one (starting it first if needed), fails with
    the end of its output if it failed, and records :func:`result_digests` of the folder
    as the run left it (in :attr:`digests`), before any test reruns something there.
    """

    def __init__(self, root: Path, with_paper: bool):
        self.config = tiny_config(SMALL_STUDIES)
        self.with_paper = with_paper
        self.first = sandbox(root / "first", self.config, with_library=True)
        self.second = shutil.copytree(self.first, root / "second")
        self.digests: dict[Path, dict[str, str]] = {}
        self._procs: dict[Path, subprocess.Popen] = {}

    def targets(self, folder: Path) -> tuple[str, ...]:
        paper = ("paper",) if self.with_paper and folder == self.first else ()
        return (*DEFAULT_TARGETS, *paper)

    def start(self, *folders: Path) -> None:
        for folder in folders:
            if folder in self._procs:
                continue
            env = library_env(folder)
            env.pop("SOURCE_DATE_EPOCH", None)  # the date then comes from no checkout: none
            self._procs[folder] = start_snakemake(
                folder, *local(*self.targets(folder)), log=self.log(folder), env=env)

    def log(self, folder: Path) -> Path:
        """Snakemake's output of the run in ``folder``."""
        return folder.parent / f"{folder.name}.log"

    def result(self, folder: Path, timeout: float = 1800) -> Path:
        if folder in self.digests:
            return folder
        self.start(folder)
        proc = self._procs[folder]
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            raise AssertionError(f"snakemake in {folder} ran past {timeout:.0f} s") from None
        if rc != 0:
            raise AssertionError(
                f"snakemake {' '.join(self.targets(folder))} failed ({rc}) in {folder}:\n"
                f"{self.log(folder).read_text(errors='replace')[-8000:]}")
        self.digests[folder] = result_digests(folder)
        return folder

    def stop(self) -> None:
        """Stop runs still going (a test failed before waiting for them)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                signal_group(proc, signal.SIGKILL)


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


def start_snakemake(
    folder: Path, *args: str, log: Path, env: Mapping | None = None
) -> subprocess.Popen:
    """Start Snakemake in the background as the leader of a new process group."""
    out = open(log, "wb")  # noqa: SIM115 (handed to the child)
    try:
        return subprocess.Popen(
            snakemake_argv(*args), cwd=folder, stdout=out, stderr=subprocess.STDOUT,
            env=None if env is None else dict(env), start_new_session=True,
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
