"""Every stage refuses inputs written under another configuration, and reports bad inputs
clearly (naming the file) instead of crashing in its own error path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from test_heuristic import SETTINGS, TINY_LOOP
from test_metrics import CONFIG, GROUP, PAIRS, SCHEMES, TEACHERS, UNIT, block, fake_runs

from mfsym.figures.curves import curves_job
from mfsym.pipeline import data as mdata
from mfsym.pipeline.heuristic import step_job
from mfsym.pipeline.metrics import metrics_job
from mfsym.pipeline.runs import train_job
from mfsym.pipeline.summary import summary_job
from mfsym.records.lineage import ConfigMismatchError
from mfsym.records.results import read_dataset, write_dataset

GRID = {"inits": ["SI"], "N": [5], "teachers": TEACHERS, "schemes": SCHEMES, "seeds": [0, 1],
        "pairs": PAIRS}


def _changed(config: dict, section: str, key: str, value) -> dict:
    out = copy.deepcopy(config)
    out[section][key] = value
    return out


def _metrics_files(tmp_path, config, time_of_second=None):
    rng = np.random.default_rng(3)
    first, second = block("SI", 5, [0], rng), block("SI", 5, [1], rng)
    if time_of_second is not None:
        second = second.assign_coords(time=time_of_second(second["time"].values.copy()))
    return [write_dataset(first, tmp_path / "m0.nc", config, "metrics"),
            write_dataset(second, tmp_path / "m1.nc", config, "metrics")]


def test_summary_refuses_metrics_of_another_alpha(tmp_path):
    stale = _changed(CONFIG, "training", "alpha", 1e6)
    paths = _metrics_files(tmp_path, CONFIG)
    paths[1] = write_dataset(read_dataset(paths[1]), tmp_path / "m1.nc", stale, "metrics")
    with pytest.raises(ConfigMismatchError) as info:
        summary_job(paths, tmp_path / "summary.nc", CONFIG, GRID)
    assert str(paths[1]) in str(info.value)
    assert [d[0] for d in info.value.differences] == ["training.alpha"]
    assert info.value.differences[0][1:] == (1e6, CONFIG["training"]["alpha"])
    assert not (tmp_path / "summary.nc").exists()


def test_summary_accepts_a_difference_in_figure_styling_only(tmp_path):
    paths = _metrics_files(tmp_path, CONFIG)
    restyled = _changed(CONFIG, "figures", "dpi", CONFIG["figures"]["dpi"] + 1)
    summary_job(paths, tmp_path / "summary.nc", restyled, GRID)
    assert read_dataset(tmp_path / "summary.nc")["rmd_projected"].sizes["seed"] == 2


def test_garbled_time_coordinate_is_reported_naming_the_file(tmp_path):
    def garble(t):
        t[-1] = t[-1] * (1 + 1e-9)
        return t

    paths = _metrics_files(tmp_path, CONFIG, time_of_second=garble)
    with pytest.raises(ValueError, match="time coordinates of .*m1.nc"):
        summary_job(paths, tmp_path / "summary.nc", CONFIG, GRID)


def _runs_file(path, config):
    runs = fake_runs(np.random.default_rng(5).standard_normal((3, 4, 2, 3, 4)))
    for var in runs.data_vars.values():
        var.attrs.update(long_name="a run record", units="1")
    return write_dataset(runs, path, config, "training runs")


def test_metrics_job_refuses_runs_trained_under_another_alpha(tmp_path):
    runs = _runs_file(tmp_path / "runs.nc", _changed(CONFIG, "training", "alpha", 1e6))
    with pytest.raises(ConfigMismatchError, match=r"runs\.nc(.|\n)*training\.alpha"):
        metrics_job(GROUP, UNIT, PAIRS, runs, tmp_path / "m.nc", CONFIG)
    assert not (tmp_path / "m.nc").exists()


def test_metrics_job_accepts_runs_that_differ_in_figure_styling(tmp_path):
    runs = _runs_file(tmp_path / "runs.nc", _changed(CONFIG, "figures", "style", "ticks"))
    metrics_job(GROUP, UNIT, PAIRS, runs, tmp_path / "m.nc", CONFIG)
    assert read_dataset(tmp_path / "m.nc")["rmd_projected"].sizes["seed"] == 2


def test_train_job_refuses_teachers_of_another_data_section(tmp_path):
    training = CONFIG["training"]
    other = _changed(CONFIG, "data", "teacher_seed", CONFIG["data"]["teacher_seed"] + 1)
    datasets = {
        "teachers": (mdata.teacher_dataset(GROUP, UNIT, TEACHERS, other["data"]), other),
        "initial": (mdata.initial_dataset(GROUP, UNIT, training, "SI", 3, [0]), CONFIG),
        "eval": (mdata.evaluation_dataset(GROUP, training), CONFIG),
    }
    paths = {k: str(write_dataset(ds, tmp_path / f"{k}.nc", cfg, k))
             for k, (ds, cfg) in datasets.items()}
    setting = {"group": GROUP, "unit": UNIT, "training": training, "schemes": SCHEMES}
    with pytest.raises(ConfigMismatchError, match="teachers.nc") as info:
        train_job(setting, "SI", 3, paths, tmp_path / "runs.nc", CONFIG)
    assert [d[0] for d in info.value.differences] == ["data.teacher_seed"]


def _heuristic_config(**loop) -> dict:
    section = {**copy.deepcopy(TINY_LOOP), **loop, "resources": {"threads": 1}}
    section["settings"] = copy.deepcopy(list(SETTINGS.values()))
    return {"training": CONFIG["training"], "heuristic": section}


def test_heuristic_step_checks_only_its_own_setting_of_the_previous_step(tmp_path):
    setting = SETTINGS["C2-matrix"]
    first = _heuristic_config()
    step0 = tmp_path / "step0.nc"
    step_job(setting, TINY_LOOP, CONFIG["training"], 0, None, step0, first, threads=1)
    others = [name for name in SETTINGS if name != "C2-matrix"]
    assert others, "the test needs a second setting"

    loosened = _heuristic_config(tolerance=TINY_LOOP["tolerance"] / 2)
    with pytest.raises(ConfigMismatchError, match="step0.nc") as info:
        step_job(setting, TINY_LOOP, CONFIG["training"], 1, step0, tmp_path / "s1.nc", loosened)
    assert [d[0] for d in info.value.differences] == ["heuristic.tolerance"]

    unrelated = _heuristic_config()
    unrelated["heuristic"]["resources"]["threads"] = 4
    next(s for s in unrelated["heuristic"]["settings"] if s["name"] == others[0])["seed"] = 9
    step_job(setting, TINY_LOOP, CONFIG["training"], 1, step0, tmp_path / "s1.nc", unrelated,
             threads=1)
    assert read_dataset(tmp_path / "s1.nc")["status"].size == 1


def test_figure_job_refuses_a_summary_of_another_alpha_and_accepts_restyling(tmp_path):
    summary = tmp_path / "summary.nc"
    stale = _changed(CONFIG, "training", "alpha", 1e6)
    summary_job(_metrics_files(tmp_path, stale), summary, stale, GRID)
    figures = {**CONFIG["figures"], "curves_N": 5}
    outputs = {"png": tmp_path / "fig" / "curves.png"}
    with pytest.raises(ConfigMismatchError, match="summary.nc(.|\\n)*training.alpha"):
        curves_job(summary, figures, outputs, config=CONFIG)
    assert not outputs["png"].exists()
    restyled = _changed(stale, "figures", "dpi", 20)
    curves_job(summary, {**figures, "dpi": 20}, outputs, config=restyled)
    assert outputs["png"].exists()
