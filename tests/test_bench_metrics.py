"""The metrics benchmark on a trained run file: every problem of the metrics job, timed."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
PATH = ROOT / "benchmarks" / "bench_metrics.py"
PAIRS = ["vanilla-DA", "vanilla-FA", "DA-FA", "vanilla-EA", "DA-EA", "FA-EA"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_metrics", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_file(tmp_path):
    """A run file of 2 teachers x 4 schemes x 2 seeds with a vanilla twin, N = 6."""
    rng = np.random.default_rng(0)
    final = rng.standard_normal((2, 4, 2, 6, 4))
    twin = rng.standard_normal((2, 2, 6, 4))
    ds = xr.Dataset(
        {"final_particles": (("teacher", "scheme", "seed", "particle", "coord"), final),
         "baseline_final_particles": (("teacher", "seed", "particle", "coord"), twin)},
        coords={"teacher": ["WI", "SI"], "scheme": ["vanilla", "DA", "FA", "EA"],
                "seed": [3, 4]},
        attrs={"baseline": "vanilla"},
    )
    path = tmp_path / "b0.nc"
    ds.to_netcdf(path)
    return path, ds


def test_trained_problems_are_those_of_a_metrics_job(bench, run_file):
    _, ds = run_file
    problems = bench.trained_problems(ds, PAIRS, seeds=1)
    kinds = [kind for kind, *_ in problems]
    # per teacher and timed seed: one transport per scheme, one assignment per pair, the twin
    assert (kinds.count("to ν^G"), kinds.count("pair"), kinds.count("baseline")) == (8, 12, 2)
    assert all("seed 3" in label for _, label, _ in problems)
    twin = [clouds for kind, label, clouds in problems if kind == "baseline" and "SI" in label]
    np.testing.assert_array_equal(twin[0][0], ds["final_particles"].values[1, 0, 0])
    np.testing.assert_array_equal(twin[0][1], ds["baseline_final_particles"].values[1, 0])


def test_bench_on_a_run_file_prints_totals_and_the_job_projection(bench, run_file, capsys):
    path, _ = run_file
    bench.main(["--runs", str(path), "--seeds", "1", "--config", str(ROOT / "config.yaml")])
    out = capsys.readouterr().out
    assert "N = 6, 1 of 2 seeds, 22 problems" in out
    assert re.search(r"per kind: to ν\^G [0-9.]+ s, pair [0-9.]+ s, baseline [0-9.]+ s", out)
    assert re.search(r"the job's 2 seeds: [0-9]+ s", out)
