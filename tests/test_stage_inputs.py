"""Every stage refuses inputs written under another configuration, and reports bad inputs
clearly (naming the file) instead of crashing in its own error path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from test_metrics import CONFIG, PAIRS, SCHEMES, TEACHERS, block

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

