"""The precision swap behind the "stays on E^G" rows: one cell rerun alone in each float
type, and the rounding test on what the real dynamics does at a large step α/N."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from mfsym.engine.training import RunSpec, train_stack
from mfsym.paper.claims import ROUNDING, Context, Criteria
from mfsym.paper.claims.deep import claim_deep_stays
from mfsym.paper.claims.stats import rounding_test
from mfsym.pipeline.config import build_group, build_teachers, build_unit, train_config
from mfsym.pipeline.deep import deep_job
from mfsym.pipeline.precision_swap import make_rerun, rerun_cell
from mfsym.records.results import read_dataset

ROOT = Path(__file__).resolve().parents[1]
CELL = {"init": "SI", "N": 10, "teacher": "WI", "scheme": "vanilla", "seed": 1}


def config(T=2.0) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["training"]["T"] = T
    return cfg


def test_a_cell_trains_alone_as_in_its_stack():
    """Run (WI teacher, vanilla, seed 1) at N = 10 in a stack of 18 runs, float64, and
    alone with 401 snapshots: the same final distance to E^G, to the last bit."""
    cfg = config()
    group = build_group(cfg["group"], cfg["unit"])
    unit = build_unit(cfg["group"], cfg["unit"])
    teachers = build_teachers(group, cfg["teachers"], cfg["data"])
    runs = [RunSpec(t, s, seed) for t in cfg["teachers"] for s in ("vanilla", "FA", "EA")
            for seed in (0, 1)]
    stack = train_stack(group, unit, teachers, runs, 10, "SI",
                        train_config({**cfg["training"], "dtype": "float64"}))
    time, rmd = rerun_cell(cfg, "grid", CELL, "float64")
    assert time.shape == rmd.shape == (401,)
    # 401 uniform times rounded to the 20 steps of N·T: from 0 to T, never backwards
    assert time[0] == 0.0 and time[-1] == 2.0 and np.all(np.diff(time) >= 0)
    assert rmd[-1] == stack.rmd_projected[runs.index(RunSpec("WI", "vanilla", 1)), -1]


def test_the_two_float_types_differ_by_rounding_alone():
    """Both reruns draw their samples and noise in float64: vanilla's distance to E^G
    (0.1 at T = 2) agrees to float32 precision in the two types, not to the O(1) change
    that other samples would make."""
    cfg = config()
    _, d32 = rerun_cell(cfg, "grid", CELL, "float32")
    _, d64 = rerun_cell(cfg, "grid", CELL, "float64")
    assert d64[-1] > 0.05
    assert abs(d32[-1] - d64[-1]) < 1e-4 * d64[-1]


def test_fa_at_the_largest_step_leaves_eg_by_amplified_rounding():
    """FA from the SI start at N = 5 (step α/N = 10), arbitrary teacher, seed 1: the
    distance to E^G rises from rounding level to ~1e-3 by T = 20 in float64, and the
    float32 rerun rises at the same rate from a start larger by about ε₃₂/ε₆₄ — the
    rounding test holds; measured rates 1.33 and 1.24."""
    cell = {"init": "SI", "N": 5, "teacher": "arbitrary", "scheme": "FA", "seed": 1}
    curves = {p: rerun_cell(config(T=20.0), "grid", cell, p) for p in ("float32", "float64")}
    assert curves["float64"][1][-1] > 1e-4
    test = rounding_test(curves, 0.05, 0.2, 10.0)
    assert test.ok, test
    assert 1.0 < test.rates["float64"] < 1.6 and test.rate_difference < 0.2


@pytest.fixture(scope="module")
def deep_stage(tmp_path_factory):
    cfg = config()
    deep = cfg["deep"]
    deep["seeds"] = [0]
    # float64 pinned (the default, dtype auto, trains these sizes in float32): the rerun
    # below is compared with the stack to the last bits, in the stack's own dtype
    deep["training"] = {**deep["training"], "T": 2.0, "n_eval": 64, "dtype": "float64"}
    deep["mlp"]["n_particles"] = [8, 16]
    out = tmp_path_factory.mktemp("deep") / "mlp.nc"
    deep_job("mlp", deep, cfg["training"], out, cfg, threads=1)
    return cfg, read_dataset(out)


def test_a_deep_cell_reruns_as_in_its_stage(deep_stage):
    """The mlp stage trained in float64: a rerun of any of its cells ends at the stage's
    recorded distance to E^G."""
    cfg, ds = deep_stage
    assert set(ds.training_dtype.values.ravel()) == {"float64"}
    cell = {"init": "SI", "N": 16, "teacher": "WI", "scheme": "vanilla", "seed": 0}
    _, rmd = rerun_cell(cfg, "mlp", cell, "float64")
    recorded = float(ds.rmd_projected.sel(**{k: v for k, v in cell.items()}))
    assert rmd[-1] == pytest.approx(recorded, rel=1e-12, abs=1e-15)


def test_a_deep_stay_row_above_the_tolerance_runs_the_swap(deep_stage):
    """With a tolerance below every distance the deep "stays" row reruns its worst cell in
    both types through the rerun callable; the verdict follows the rounding test."""
    cfg, ds = deep_stage
    calls = []
    real = make_rerun(cfg)

    def rerun(stage, cell, dtype):
        calls.append((stage, dict(cell), dtype))
        return real(stage, cell, dtype)

    crit = Criteria(exact_tol=1e-300)
    row = claim_deep_stays(ds, crit, Context(stage="mlp", rerun=rerun))
    assert {c[2] for c in calls} == {"float32", "float64"}
    assert calls[0][0] == "mlp" and calls[0][1]["N"] in (8, 16)
    assert any(label.startswith(r"growth rate") for label, _ in row.values)
    assert row.verdict in (ROUNDING, "not supported at this configuration")


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage 'heuristic'"):
        rerun_cell(copy.deepcopy(config()), "heuristic", CELL, "float64")
