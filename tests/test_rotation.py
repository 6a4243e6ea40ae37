"""The rotation stage (PAPER.md §11): configuration of compact groups, the WI teacher and its
reported equivariance error, the FA_K study, and the claims rows of the setting."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pipeline_sandbox import repo_config
from test_paper import synthetic_summary

from mfsym.engine.training import TrainConfig
from mfsym.measure.equivariance import equivariance_error
from mfsym.paper.claims import Criteria, rotation_claims, summary_claims
from mfsym.pipeline.config import ConfigError, build_group, build_teachers, build_unit
from mfsym.pipeline.rotation import check_section, metrics_job, teacher_errors, train_job
from mfsym.records.results import read_dataset
from mfsym.studies.quadrature import fa_quadrature_study

UV = {"name": "uv", "activation": "sigmoid"}


def section():
    return copy.deepcopy(repo_config()["rotation"])


def test_compact_group_keys_are_required_and_refused_where_they_do_not_apply():
    with pytest.raises(ConfigError, match="group.quadrature_points is missing"):
        build_group({"name": "SO2", "dim": 3, "symmetrized_points": 4}, UV)
    with pytest.raises(ConfigError, match="group.symmetrized_points = 4 applies only"):
        build_group({"name": "C2", "dim": 2, "symmetrized_points": 4}, UV)
    group = build_group({"name": "O2", "dim": 3, "quadrature_points": 3,
                         "symmetrized_points": 5}, UV)
    assert group.order == 6 and group.sym_points == 5
    assert group.symmetrize(np.ones((2, 6))).shape == (20, 6)  # D_5: 10 elements × 2 atoms


@pytest.mark.parametrize(("change", "key"), [
    ({"quadrature": {"reference_points": 16}}, "rotation.quadrature.reference_points"),
    ({"quadrature": {"teacher": "WI"}, "teachers": ["arbitrary"]}, "rotation.quadrature.teacher"),
    ({"group": {"name": "C2", "dim": 2}}, "rotation.group.name"),
    ({"pairs": ["vanilla-XA"]}, r"rotation.pairs\[0\]"),
    ({"baseline": "DA-orbit", "schemes": ["vanilla", "DA", "FA", "EA"]}, "rotation.baseline"),
])
def test_bad_rotation_sections_name_the_key(change, key):
    sec = section()
    for k, v in change.items():
        sec[k] = {**sec[k], **v} if isinstance(v, dict) else v
    with pytest.raises(ConfigError, match=key):
        check_section(sec, repo_config()["training"])


def test_wi_teacher_is_exactly_ck_equivariant_and_its_so2_error_falls_with_k():
    """The K-point orbit of the arbitrary cloud is C_K-equivariant to rounding; its SO(2)
    error falls with K (aliasing of the network's angular Fourier modes at multiples of
    K), to rounding at the default K = 64."""
    sec = section()
    group = build_group(sec["group"], sec["unit"])
    unit = build_unit(sec["group"], sec["unit"])
    k = sec["data"]["teacher_orbit_points"]
    wi = build_teachers(group, ["WI"], sec["data"])["WI"]
    assert wi.particles.shape[0] == k * sec["data"]["teacher_particles"]
    rng = np.random.default_rng(0)
    x = 4.0 * rng.standard_normal((k, 3))
    ck = group.compact.xy.quadrature_xy(k).x  # one element of C_K per input, all of them
    assert equivariance_error(unit, wi.particles, x, ck, ck) < 1e-12
    errors = teacher_errors(sec, repo_config()["training"])
    assert errors["SI"] < 1e-12 and errors["WI"] < 1e-12 and errors["arbitrary"] > 0.1
    coarse = [
        teacher_errors({**sec, "data": {**sec["data"], "teacher_orbit_points": k}},
                       repo_config()["training"])["WI"]
        for k in (2, 4, 8)
    ]
    assert coarse[0] > coarse[1] > coarse[2] > 1e-4


def test_fa_quadrature_study_stays_on_eg_from_k_two_and_approaches_the_group_average():
    sec = section()
    group = build_group(sec["group"], sec["unit"])
    unit = build_unit(sec["group"], sec["unit"])
    teacher = build_teachers(group, ["arbitrary"], sec["data"])["arbitrary"]
    cfg = TrainConfig(T=2.0, dtype="float64", backend="eager", device="cpu", n_eval=64,
                      n_snapshots=2)
    ds = fa_quadrature_study(group.compact, unit, teacher, [1, 2, 4], 64, 16, [0, 1],
                             ["SI", "WI"], cfg, 128)
    si = ds["rmd_projected"].sel(init="SI")
    assert float(si.sel(K=1).min()) > 1e-4  # K = 1: vanilla
    assert float(si.sel(K=[2, 4]).max()) < 1e-12
    dist = ds["model_distance"].sel(init="WI").mean("seed").values
    assert dist[0] > dist[1] > dist[2] > 0
    # an SI cloud is SO(2)-invariant, so every K ≥ 2 average already is the group average
    assert float(ds["model_distance"].sel(init="SI", K=[2, 4]).max()) < 1e-12


def test_rotation_jobs_train_orbit_da_on_eg_and_a_baseline_twin(tmp_path):
    """The rotation stage's orbit-averaged DA (loss averaged over C_K) keeps an SI start on
    E^G for every teacher, the arbitrary one included (where vanilla leaves it), and its
    baseline twin (a second vanilla run on a stream of its own) gives claim 1 its floor:
    a positive RMD between two vanilla runs from one start."""
    cfg = repo_config()
    sec = {**section(), "seeds": [0, 1],
           "training": {**section()["training"], "T": 2.0, "n_eval": 128, "n_snapshots": 3,
                        "checkpoint_every": 0}}
    assert sec["baseline"] == "vanilla" and "DA-orbit" in sec["schemes"]
    runs_path, metrics_path = tmp_path / "runs.nc", tmp_path / "metrics.nc"
    train_job(sec, cfg["training"], "SI", 20, runs_path, {**cfg, "rotation": sec})
    metrics_job(sec, runs_path, metrics_path, {**cfg, "rotation": sec})
    threaded = tmp_path / "metrics-2.nc"
    metrics_job(sec, runs_path, threaded, {**cfg, "rotation": sec}, threads=2)
    runs, metrics = read_dataset(runs_path), read_dataset(metrics_path)
    for name, var in read_dataset(threaded).data_vars.items():  # threads change no number
        np.testing.assert_array_equal(var.values, metrics[name].values, err_msg=name)
    final = runs["rmd_projected"].isel(time=-1)
    assert float(final.sel(scheme="DA-orbit").max()) < 1e-12
    assert float(final.sel(scheme="vanilla", teacher="arbitrary").min()) > 0.1
    assert runs.attrs["baseline"] == "vanilla"
    twin = runs["baseline_final_particles"].values
    own = runs["final_particles"].sel(scheme="vanilla").values
    assert twin.shape == own.shape and not np.allclose(twin, own)
    floor = metrics["rmd_baseline"].values
    assert floor.shape == (3, 2) and np.all(np.isfinite(floor)) and np.all(floor > 1e-3)


def test_rotation_claims_are_the_summary_claims_of_the_setting():
    ds = synthetic_summary()
    ds.attrs["setting"] = "SO2-uv"
    crit = Criteria()
    plain, rot = summary_claims(ds, crit), rotation_claims(ds, crit)
    assert [c.key for c in rot] == [f"Rot{c.key}" for c in plain]
    assert [c.verdict for c in rot] == [c.verdict for c in plain]
    assert all(c.statement.startswith("[SO2-uv] ") for c in rot)


def test_rotation_stage_trains_in_float64_because_float32_drives_fa_off_eg():
    """The precision decision of the rotation stage: in float32, FA over C_K leaves E^G from
    an SI start (rounding of the rotation matrices; measured RMD 6.7e-4 at N = 50), in the
    configured float64 it stays there to rounding."""
    from mfsym.engine.training import RunSpec, train_stack
    from mfsym.pipeline.config import train_config
    from mfsym.pipeline.rotation import training_section

    cfg = repo_config()
    rot = cfg["rotation"]
    group, unit = build_group(rot["group"], rot["unit"]), build_unit(rot["group"], rot["unit"])
    teachers = build_teachers(group, ["arbitrary", "WI"], rot["data"])
    runs = [RunSpec(t, "FA", 0) for t in ("arbitrary", "WI")]
    configured = train_config({**training_section(cfg["training"], rot), "device": "cpu",
                               "n_eval": 64, "n_snapshots": 2})
    assert configured.resolved_dtype(50) == "float64"
    drift = {}
    for name, tc in (("configured", configured),
                     ("float32", TrainConfig(**{**configured.__dict__, "dtype": "float32"}))):
        res = train_stack(group, unit, teachers, runs, 50, "SI", tc)
        drift[name] = float(np.max(res.rmd_projected[:, -1]))
    assert drift["float32"] > 1e-5 and drift["configured"] <= 1e-9, drift
