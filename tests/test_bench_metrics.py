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
    assert "N = 6, 1 of 2 seeds, 22 problems, seconds old -> new" in out
    num = r"[0-9.]+ s -> [0-9.]+ s"
    assert re.search(rf"per kind: to ν\^G {num}, pair {num}, baseline {num}", out)
    assert re.search(r"the job's 2 seeds: [0-9]+ s -> [0-9]+ s", out)


def test_upsampled_clouds_keep_couplings_and_the_fixed_subspace(bench, run_file):
    """Equal clouds stay equal, a cloud on E^G stays on it, every atom is kept."""
    _, ds = run_file
    final = ds["final_particles"].values.copy()
    p_e = bench.c2_group().reynolds()
    final[:, 2] = final[:, 1]  # FA = DA
    final[:, 3] = final[:, 3] @ p_e  # EA on E^G
    ds = ds.assign(final_particles=(ds["final_particles"].dims, final))
    big = bench.upsample(ds, 3)
    cloud = big["final_particles"].transpose("teacher", "scheme", "seed", "particle",
                                              "coord").values
    assert cloud.shape == (2, 4, 2, 18, 4)
    np.testing.assert_array_equal(cloud[:, 2], cloud[:, 1])
    np.testing.assert_allclose(cloud[:, 3] @ p_e, cloud[:, 3], atol=1e-12)
    np.testing.assert_array_equal(cloud[..., ::3, :], final)
    assert big["baseline_final_particles"].shape == (2, 2, 18, 4)
    assert list(big["scheme"].values) == list(ds["scheme"].values)
    assert list(big["seed"].values) == [3, 4] and big.attrs["N"] == 18


def test_old_path_settings_hold_inside_the_block_only(bench):
    import mfsym.measure.assignment as assignment
    import mfsym.measure.transport as transport

    before = (assignment.DENSE_UP_TO, assignment.WARM_FROM, assignment.BLOCK,
              transport.assignment_solve)
    with bench.solver_path("old"):
        assert (assignment.DENSE_UP_TO, assignment.BLOCK) == (4000, 1024)
        assert transport.assignment_solve.keywords == {"solver": "lapjvsp"}
    assert (assignment.DENSE_UP_TO, assignment.WARM_FROM, assignment.BLOCK,
            transport.assignment_solve) == before


def test_problem_kinds_are_solved_alike_on_both_paths_and_projected(bench, tmp_path, capsys):
    """Every kind at small N on both paths (time_paths checks that they agree), and the
    projection of a small grid."""
    import yaml

    cfg = {"teachers": ["arbitrary", "WI", "SI"], "schemes": ["vanilla", "DA", "FA", "EA"],
           "inits": ["SI", "WI"], "n_particles": [5, 40], "seeds": [0, 1, 2],
           "seeds_per_job": 2, "metrics": {"pairs": PAIRS}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    bench.main(["--n", "5", "--repeat", "2", "--config", str(path)])
    out = capsys.readouterr().out
    for kind in bench.KINDS:
        assert len(re.findall(rf"^ +(5|40) {re.escape(kind)} ", out, flags=re.M)) == 2
    assert re.search(r"projected on one core: old [0-9]+ s = [0-9.]+ h, new [0-9]+ s", out)
    assert sum(bench.MIX["SI"].values()) == sum(bench.MIX["WI"].values()) == 15 + 18 + 3
