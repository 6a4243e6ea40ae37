"""Snakemake's between-workflow cache of the training jobs, shared by two checkouts.

The first checkout trains and fills the cache; a second checkout of the same code and
configuration trains nothing and gets identical run files and summary.nc; a checkout whose
engine source differs (one comment added) trains again.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from pipeline_sandbox import library_env, local, sandbox, snakemake, tiny_config

SUMMARY = "results/summary.nc"


def train_logs(folder: Path) -> list[Path]:
    """The logs of training jobs that ran (none when every run came from the cache;
    Snakemake still leaves an empty log file for a job it took from the cache)."""
    return sorted(p for p in (folder / "results" / "logs" / "train").rglob("*.log")
                  if "start train" in p.read_text())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_files(folder: Path) -> dict[str, str]:
    runs = folder / "results" / "runs"
    return {p.relative_to(runs).as_posix(): digest(p) for p in sorted(runs.rglob("*.nc*"))}


def cached_run(folder: Path, cache: Path) -> str:
    env = library_env(folder, SNAKEMAKE_OUTPUT_CACHE=str(cache))
    res = snakemake(folder, *local("--cache", "--", SUMMARY), env=env)
    return res.stdout + res.stderr


@pytest.mark.slow
def test_second_checkout_trains_nothing_and_changed_engine_trains_again(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    config = tiny_config()
    # three checkouts of one snapshot of the code (the checkout may change meanwhile)
    first = sandbox(tmp_path / "first", config, with_library=True)
    for name in ("second", "changed"):
        shutil.copytree(first, tmp_path / name)
    out_first = cached_run(first, cache)
    assert len(train_logs(first)) == 2  # SI and WI: one job each
    assert sorted(p.suffix for p in cache.rglob("*") if p.is_file()) == [".nc", ".nc"] + [
        ".sha256"] * 2

    second = tmp_path / "second"
    out_second = cached_run(second, cache)
    assert train_logs(second) == [], out_second  # no training job ran
    # 2 run files and their 2 sidecars taken from the cache, nothing stored
    assert out_second.count("from cache") == 4 and "to cache" not in out_second, out_second
    assert run_files(second) == run_files(first)
    assert digest(second / SUMMARY) == digest(first / SUMMARY)

    changed = tmp_path / "changed"
    engine = changed / "src" / "mfsym" / "engine" / "training.py"
    engine.write_text(engine.read_text() + "\n# an edit of the engine\n")
    out_changed = cached_run(changed, cache)
    assert len(train_logs(changed)) == 2, out_changed  # trained again
    # new cache entries (a hit would only symlink, never move anything to the cache)
    assert out_changed.count("to cache") == 4, out_changed
    print("\n".join(line for out in (out_first, out_second, out_changed)
                    for line in out.splitlines() if "cache" in line.lower()))
