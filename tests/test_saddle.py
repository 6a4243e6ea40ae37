"""The saddle study (PAPER.md §12): escape statistics on curves with a known law, a setting
without escape, the bootstrap, the section's checks and a tiny run of the stage."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from pipeline_sandbox import REPO, repo_config

from mfsym.engine.train_config import TrainConfig, snapshot_steps, snapshot_times
from mfsym.figures.saddle import saddle_job
from mfsym.pipeline.config import ConfigError, check_config, load_schema
from mfsym.pipeline.saddle import (
    RUNS_SCOPE,
    SADDLE_NONFINITE,
    SCOPE,
    analysis_job,
    check_section,
    saddle_dataset,
    train_job,
)
from mfsym.records.lineage import ConfigMismatchError
from mfsym.records.results import check_dataset, read_dataset
from mfsym.studies.saddle import escape_analysis, risk_ratios

DELTA, FLOOR, RATE, C, SATURATION = 0.05, 3e-3, 0.4, 0.05, 0.5
NS = np.array([50, 100, 200, 500, 1000, 2000])

#: the names the claims code reads (the dataset contract of saddle.nc)
CONTRACT = {
    "rmd_projected_curve": ("scheme", "N", "seed", "time"),
    "population_risk_curve": ("scheme", "N", "seed", "time"),
    "escape_time": ("N",), "escape_time_seed": ("N", "seed"),
    "escape_time_interval": ("N", "bound"),
    "growth_rate": ("N",), "growth_rate_window": ("N", "edge"),
    "growth_rate_seed": ("N", "seed"), "growth_rate_interval": ("N", "bound"),
    "collapse_spread": (), "collapse_spread_interval": ("bound",),
    "escape_slope": (), "escape_slope_interval": ("bound",),
    "law_ratio": (), "law_ratio_interval": ("bound",),
    "law_ratio_median": (), "law_ratio_median_interval": ("bound",),
    "risk_ratio": ("held", "N"), "risk_ratio_interval": ("held", "N", "bound"),
}
CONTRACT_ATTRS = ("delta", "floor", "reference_N", "escaped_n", "setting", "dtype")


def law_curves(time, ns=NS, seeds=3, scale=None):
    """d = min(saturation, c_s · N^{-1/2} · e^{λ t}) (N, seed, time); ``scale`` (N, seed)
    multiplies c per run (default 1)."""
    scale = np.ones((len(ns), seeds)) if scale is None else scale
    d = C * scale[..., None] * np.exp(RATE * time)[None, None] / np.sqrt(ns)[:, None, None]
    return np.minimum(d, SATURATION)


def test_linear_snapshots_are_uniform_in_t_from_0_to_t_and_land_on_steps():
    times = snapshot_times(20.0, 101, "linear")
    assert times[0] == 0.0 and times[-1] == 20.0
    np.testing.assert_allclose(np.diff(times), 0.2, rtol=1e-12)
    cfg = TrainConfig(T=20.0, n_snapshots=101, snapshot_spacing="linear")
    for n in (20, 50, 500):
        np.testing.assert_array_equal(snapshot_steps(cfg, n), np.arange(101) * n // 5)


def test_known_law_is_recovered():
    time = np.linspace(0.0, 30.0, 301)
    ds = escape_analysis(time, NS, law_curves(time), DELTA, FLOOR, 50, 0, 0.9)
    # t_esc: the first snapshot at or after t* = (ln(δ/c) + ½ ln N)/λ
    t_star = (math.log(DELTA / C) + 0.5 * np.log(NS)) / RATE
    t_esc = ds["escape_time"].values
    assert np.all(t_esc >= t_star - 1e-9) and np.all(t_esc - t_star < 0.1 + 1e-9)
    np.testing.assert_array_equal(ds["escape_time_seed"].values, np.repeat(t_esc[:, None], 3, 1))
    # λ exact on a pure exponential, over the stretch from the floor to the last snapshot
    # below δ
    np.testing.assert_allclose(ds["growth_rate"].values, RATE, rtol=1e-9)
    np.testing.assert_allclose(ds["growth_rate_seed"].values, RATE, rtol=1e-9)
    start = np.maximum(np.log(FLOOR * np.sqrt(NS) / C) / RATE, 0.0)  # from t = 0 if above
    window = ds["growth_rate_window"].values
    assert np.all(window[:, 0] >= start - 1e-9) and np.all(window[:, 0] - start < 0.1 + 1e-9)
    np.testing.assert_allclose(window[:, 1], t_esc - 0.1, atol=1e-9)
    # the ln N law: b = 1/(2λ) to snapshot resolution, one rate everywhere
    assert abs(float(ds["escape_slope"]) * 2 * RATE - 1) < 0.03
    assert float(ds["predicted_slope"]) == pytest.approx(1 / (2 * RATE))
    assert float(ds["law_ratio"]) == pytest.approx(1, abs=0.03)
    assert float(ds["law_ratio_median"]) == pytest.approx(float(ds["law_ratio"]))
    # sqrt(N)·d is the same curve for every N before the first escape
    assert float(ds["collapse_spread"]) < 1e-12
    assert ds.attrs["escaped_n"] == len(NS) and ds.attrs["reference_N"] == 2000
    # identical seeds: every resample is the sample, the intervals are points
    np.testing.assert_allclose(ds["law_ratio_interval"].values, float(ds["law_ratio"]))


def test_the_rate_window_is_the_last_stretch_above_the_floor_before_escape():
    """An early transient above the floor (t in [0.5, 1.5]) that falls back below it is not
    the exponential phase: the window starts after the last snapshot below the floor."""
    time = np.linspace(0.0, 30.0, 301)
    d = law_curves(time)
    d[:, :, 5:16] = 0.01
    d[:, :, 16:25] = 1e-4
    ds = escape_analysis(time, NS, d, DELTA, FLOOR, 0, 0, 0.9)
    np.testing.assert_allclose(ds["growth_rate"].values, RATE, rtol=1e-9)
    assert np.all(ds["growth_rate_window"].values[:, 0] >= 2.5 - 1e-9)


def test_collapse_spread_is_max_minus_min_over_median_of_sqrt_n_d():
    """Amplitudes 1, 1.3, 1 of the rescaled curves: spread (1.3 − 1)/1 at every time
    before the first escape."""
    time = np.linspace(0.0, 30.0, 301)
    scale = np.array([[1.0], [1.3], [1.0]])
    ds = escape_analysis(time, NS[:3], law_curves(time, NS[:3], 1, scale), DELTA, FLOOR, 0,
                         0, 0.9)
    assert float(ds["collapse_spread"]) == pytest.approx(0.3, rel=1e-9)
    first = float(ds["escape_time"].min())
    curve = ds["collapse_spread_curve"]
    inside = (ds["time"] > 0) & (ds["time"] < first)
    np.testing.assert_allclose(curve.where(inside, drop=True), 0.3, rtol=1e-9)
    assert bool(curve.where(~inside, drop=True).isnull().all())
    assert bool(ds["law_ratio_interval"].isnull().all())  # bootstrap = 0: no interval


def test_bootstrap_interval_holds_the_estimate_and_is_deterministic_for_a_seed():
    time = np.linspace(0.0, 30.0, 301)
    scale = np.exp(0.4 * np.random.default_rng(1).standard_normal((len(NS), 6)))
    curves = law_curves(time, seeds=6, scale=scale)
    a = escape_analysis(time, NS, curves, DELTA, FLOOR, 300, 7, 0.9)
    for name in ("escape_time", "growth_rate", "escape_slope", "law_ratio", "collapse_spread"):
        est, iv = a[name].values, a[f"{name}_interval"].values
        assert np.all(iv[..., 0] <= est + 1e-12) and np.all(est <= iv[..., 1] + 1e-12), name
    assert float(np.ptp(a["escape_slope_interval"].values)) > 0
    b = escape_analysis(time, NS, curves, DELTA, FLOOR, 300, 7, 0.9)
    c = escape_analysis(time, NS, curves, DELTA, FLOOR, 300, 8, 0.9)
    assert a.identical(b)
    assert not np.array_equal(a["escape_time_interval"].values, c["escape_time_interval"].values)
    # each seed's curve is still e^{λt}: its own rate is λ
    np.testing.assert_allclose(a["growth_rate_seed"].values, RATE, rtol=1e-9)


@pytest.mark.parametrize("spacing", ["linear", "log"])
def test_a_setting_without_escape_reports_it(spacing):
    """Distances that shrink with N and never reach δ (also on the grid's 16 log-spaced
    times): no escape, NaN statistics, a finite collapse spread, a dataset that passes the
    schema with the documented NaN."""
    time = snapshot_times(20.0, 101 if spacing == "linear" else 16, spacing)
    ns = np.array([5, 10, 50, 100, 500, 1000, 5000])
    d = 0.02 * (1 + time / 20)[None, None] / np.sqrt(ns)[:, None, None] * np.ones((1, 3, 1))
    ds = escape_analysis(time, ns, d, DELTA, FLOOR, 100, 0, 0.9)
    assert ds.attrs["escaped_n"] == 0 and ds.attrs["reference_N"] == 0
    for name in ("escape_time", "growth_rate", "escape_slope", "law_ratio", "law_ratio_median",
                 "predicted_slope", "escape_time_interval", "law_ratio_interval"):
        assert bool(ds[name].isnull().all()), name
    assert float(ds["collapse_spread"]) < 1e-12
    check_dataset(ds, SADDLE_NONFINITE)
    with pytest.raises(ValueError, match="non-finite"):
        check_dataset(ds)


def test_one_escaping_n_has_an_escape_time_but_no_law():
    time = np.linspace(0.0, 30.0, 301)
    d = law_curves(time)
    d[1:] = np.minimum(d[1:], 0.04)  # only N = 50 reaches δ
    ds = escape_analysis(time, NS, d, DELTA, FLOOR, 20, 0, 0.9)
    assert ds.attrs["escaped_n"] == 1 and ds.attrs["reference_N"] == 50
    assert np.isfinite(ds["escape_time"].values).tolist() == [True] + [False] * 5
    assert math.isnan(float(ds["escape_slope"])) and math.isnan(float(ds["law_ratio"]))
    assert float(ds["predicted_slope"]) == pytest.approx(1 / (2 * RATE))


def test_risk_ratio_is_the_ratio_of_seed_means_with_a_paired_bootstrap():
    rng = np.random.default_rng(0)
    vanilla = rng.uniform(1.0, 2.0, (3, 5))
    held = np.stack([vanilla * 2.5, vanilla * 2.5 + rng.uniform(0, 1, (3, 5))])
    ds = risk_ratios([20, 50, 100], vanilla, held, ["FA", "EA"], 200, 0, 0.9)
    np.testing.assert_allclose(ds["risk_ratio"].values,
                               held.mean(-1) / vanilla.mean(-1), rtol=1e-12)
    # a held risk proportional to vanilla's: every paired resample gives the same ratio
    np.testing.assert_allclose(ds["risk_ratio_interval"].sel(held="FA").values, 2.5)
    iv = ds["risk_ratio_interval"].sel(held="EA").values
    est = ds["risk_ratio"].sel(held="EA").values
    assert np.all(iv[:, 0] <= est) and np.all(est <= iv[:, 1]) and np.all(iv[:, 1] > iv[:, 0])
    assert ds.identical(risk_ratios([20, 50, 100], vanilla, held, ["FA", "EA"], 200, 0, 0.9))


def test_inputs_are_checked():
    time = np.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="floor"):
        escape_analysis(time, [10, 20], np.zeros((2, 2, 5)), 0.05, 0.05, 10, 0, 0.9)
    with pytest.raises(ValueError, match="shape"):
        escape_analysis(time, [10, 20], np.zeros((2, 5)), 0.05, 0.01, 10, 0, 0.9)
    with pytest.raises(ValueError, match="increasing"):
        escape_analysis(time, [20, 10], np.zeros((2, 2, 5)), 0.05, 0.01, 10, 0, 0.9)


def section():
    return copy.deepcopy(repo_config()["saddle"])


@pytest.mark.parametrize(("change", "key"), [
    ({"schemes": ["FA", "EA"]}, "saddle.schemes"),
    ({"schemes": ["vanilla", "DA"]}, "saddle.schemes"),
    ({"training": {"snapshot_spacing": "log"}}, "saddle.training.snapshot_spacing"),
    ({"training": {"T": -1.0}}, "saddle.training.T"),
    ({"analysis": {"floor": 0.05}}, "saddle.analysis.floor"),
    ({"analysis": {"confidence": 1.0}}, "saddle.analysis.confidence"),
    ({"group": {"symmetrized_points": None}}, "saddle.group.symmetrized_points"),
    ({"data": {"teacher_orbit_points": None}}, "saddle.data.teacher_orbit_points"),
    ({"seeds": [0]}, "saddle.seeds"),
    ({"delta": 1.5}, "saddle.delta"),
])
def test_bad_saddle_sections_name_the_key(change, key):
    sec = section()
    for k, v in change.items():
        if isinstance(v, dict):
            sec[k] = {**sec[k], **v}
            sec[k] = {kk: vv for kk, vv in sec[k].items() if vv is not None}
        else:
            sec[k] = v
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_section(sec, repo_config()["training"])


@pytest.mark.parametrize(("change", "key"), [
    ({"delta": 0.0}, "saddle.delta"),
    ({"analysis": {"bootstrap": 0}}, "saddle.analysis.bootstrap"),
    ({"analysis": {"flor": 0.01}}, "saddle.analysis"),
    ({"init": "WI"}, "saddle.init"),
    ({"n_particles": [500]}, "saddle.n_particles"),
])
def test_schema_names_bad_saddle_keys(change, key):
    cfg = repo_config()
    for k, v in change.items():
        cfg["saddle"][k] = {**cfg["saddle"][k], **v} if isinstance(v, dict) else v
    schema = load_schema(REPO / "workflow/schemas/config.schema.yaml")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(cfg, schema)


def test_shipped_sections_pass_and_the_paper_one_goes_further():
    default, paper = repo_config()["saddle"], repo_config("config/paper.yaml")["saddle"]
    for cfg in (repo_config(), repo_config("config/paper.yaml")):
        check_section(cfg["saddle"], cfg["training"])
    assert default["n_particles"][-1] >= 500 and len(default["seeds"]) >= 5
    assert paper["n_particles"][-1] == 2000 and len(paper["seeds"]) == 10
    for sec in (default, paper):
        assert sec["training"]["dtype"] == "float64" and sec["training"]["n_snapshots"] >= 101
        assert sec["teacher"] == "WI" and sec["init"] == "SI" and "vanilla" in sec["schemes"]


def test_leaving_fa_out_leaves_vanilla_and_ea_bit_for_bit(tmp_path):
    """Under the common coupling every scheme of a seed draws the same samples and noise,
    so the default schemes (vanilla, EA) train exactly the runs they train beside FA: the
    escape statistics do not depend on whether FA is trained.  And from the SI start FA
    over C_K (K ≥ 2 fixes exactly E^G) is EA: its risk equals EA's to float64 rounding."""
    cfg = repo_config()
    sec = section()
    sec.update(n_particles=[20], seeds=[0, 1])
    sec["training"] = {**sec["training"], "T": 4.0, "n_snapshots": 9, "n_eval": 64,
                       "checkpoint_every": 0}
    assert sec["schemes"] == ["vanilla", "EA"]
    curves = {}
    for schemes in (["vanilla", "EA"], ["vanilla", "FA", "EA"]):
        s = {**sec, "schemes": schemes}
        path = tmp_path / f"{len(schemes)}.nc"
        train_job(s, cfg["training"], 20, path, {**cfg, "saddle": s})
        ds = read_dataset(path)
        curves[len(schemes)] = {name: ds[name].sel(scheme=["vanilla", "EA"]).values
                                for name in ("rmd_projected", "population_risk")}
    for name in ("rmd_projected", "population_risk"):
        np.testing.assert_array_equal(curves[2][name], curves[3][name])
    assert float(read_dataset(tmp_path / "2.nc").rmd_projected.sel(scheme="vanilla").max()) > 0
    risk = read_dataset(tmp_path / "3.nc").population_risk
    np.testing.assert_allclose(risk.sel(scheme="FA"), risk.sel(scheme="EA"), rtol=1e-12)
    assert not np.allclose(risk.sel(scheme="vanilla"), risk.sel(scheme="EA"), rtol=1e-3)


def test_the_stage_writes_the_contract_and_its_figure(tmp_path):
    """Two N, three seeds, T = 9: the smallest N already leaves E^G (t_esc about 7 at
    N = 20); FA and EA stay on it in float64."""
    cfg = repo_config()
    sec = section()
    # FA as well as the default's EA: both held schemes in the contract
    sec.update(n_particles=[20, 30], seeds=[0, 1, 2], schemes=["vanilla", "FA", "EA"])
    sec["training"] = {**sec["training"], "T": 9.0, "n_snapshots": 19, "n_eval": 64,
                       "checkpoint_every": 0}
    sec["analysis"] = {**sec["analysis"], "bootstrap": 50}
    cfg["saddle"] = sec
    runs = [tmp_path / f"N{n}.nc" for n in (30, 20)]
    for path, n in zip(runs, (30, 20), strict=True):
        train_job(sec, cfg["training"], n, path, cfg)
    out = tmp_path / "saddle.nc"
    analysis_job(sec, runs, out, cfg)
    ds = read_dataset(out, cfg, SCOPE)
    for name, dims in CONTRACT.items():
        assert ds[name].dims == dims, name
    for attr in CONTRACT_ATTRS:
        assert attr in ds.attrs, attr
    assert ds["N"].values.tolist() == [20, 30] and ds["held"].values.tolist() == ["FA", "EA"]
    assert ds["scheme"].values.tolist() == ["vanilla", "FA", "EA"]
    assert ds["bound"].values.tolist() == ["low", "high"]
    assert ds["edge"].values.tolist() == ["start", "end"]
    assert ds.attrs["dtype"] == "float64" and ds.attrs["setting"] == "SO2-uv, WI teacher, SI start"
    assert float(ds["held_distance_max"].max()) < 1e-9
    # vanilla leaves E^G, the first snapshot is the exact SI start
    vanilla = ds["rmd_projected_curve"].sel(scheme="vanilla")
    assert float(vanilla.isel(time=0).max()) == 0.0 and float(vanilla.max()) > 0.05
    assert ds.attrs["escaped_n"] >= 1 and np.isfinite(ds["escape_time"].sel(N=20))
    assert np.all(ds["risk_ratio"].values > 0)
    # the run files do not depend on the analysis keys; saddle.nc does
    other = {**cfg, "saddle": {**sec, "analysis": {**sec["analysis"], "floor": 0.02}}}
    read_dataset(runs[0], other, RUNS_SCOPE)
    figures = {"pdf": tmp_path / "fig.pdf", "png": tmp_path / "fig.png"}
    with pytest.raises(ConfigMismatchError, match="saddle.analysis.floor"):
        saddle_job(out, cfg["figures"], figures, config=other)
    saddle_job(out, cfg["figures"], figures, config=cfg)
    assert all(p.stat().st_size > 1000 for p in figures.values())
    # a missing N, or a run that holds a non-finite distance, is refused
    with pytest.raises(ValueError, match=r"N = \[20\]"):
        analysis_job(sec, runs[1:], tmp_path / "x.nc", cfg)
    broken = read_dataset(runs[1])
    broken["rmd_projected"][0, 0, 0, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        saddle_dataset(sec, [read_dataset(runs[0]), broken])
