"""The SI-subspace discovery heuristic (mfsym.studies.heuristic), its files and its figure.

Recovery tests run at N = 100, T = 4, batch 500, seed 0 (a few seconds each).  At that size
the principal angles between the recovered subspace and E^G measured over seeds 0–9 are at
most 0.022 rad (C₂/matrix) and 0.014 rad (S₃/uv); the step-1 residual's second singular
value (the finite-N escape from E^G) is at most 0.09 of the first, against the tolerance
0.2.  The tests assert angles ≤ ANGLE_BOUND = 0.06 rad (3.4°), about 3× the worst seen.
E^G is taken in closed form, not from the group code.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from mfsym.engine.training import TrainConfig
from mfsym.figures.heuristic import heuristic_job, plot_heuristic
from mfsym.measure.transport import rmd_to_projected
from mfsym.paper.claims import heuristic_outcome
from mfsym.pipeline.config import check_config, load_schema
from mfsym.pipeline.heuristic import (
    build_problem,
    check_section,
    combine_job,
    setting_job,
    step_is_final,
    step_job,
)
from mfsym.records.results import read_dataset, write_dataset
from mfsym.studies.heuristic import (
    STATUS,
    HeuristicConfig,
    HeuristicError,
    angles_to,
    combine_settings,
    decide,
    discover_subspace,
    discovery_dataset,
    enlarge,
    orthonormal_basis,
    principal_directions,
    projector,
)

ROOT = Path(__file__).resolve().parents[1]
ANGLE_BOUND = 0.06
SETTINGS = {
    "C2-matrix": {
        "name": "C2-matrix", "group": {"name": "C2", "dim": 2},
        "unit": {"name": "matrix", "activation": "sigmoid"}, "teacher": "WI",
        "data": {"teacher_source": "paper", "teacher_particles": 5, "teacher_scale": 0.5,
                 "teacher_seed": 0},
        "start": [],
    },
    "S3-uv": {
        "name": "S3-uv", "group": {"name": "symmetric", "dim": 3},
        "unit": {"name": "uv", "activation": "sigmoid"}, "teacher": "WI",
        "data": {"teacher_source": "random", "teacher_particles": 5, "teacher_scale": 0.5,
                 "teacher_seed": 0},
        "start": [],
    },
}
#: E^G in closed form, rows: C₂/matrix {[[a, b], [b, a]]}; S₃/uv u ∝ 1, v ∝ 1.
FIXED = {
    "C2-matrix": np.array([[1.0, 0, 0, 1], [0, 1, 1, 0]]) / np.sqrt(2),
    "S3-uv": np.array([[1.0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]) / np.sqrt(3),
}
TRAIN = TrainConfig(T=4.0, batch_size=500, n_snapshots=2, n_eval=256)
LOOP = HeuristicConfig(N=100, seed=0, thresholds=(0.05,), tolerance=0.2, max_steps=4)


def independent_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles from the cosines σ(QaᵀQb) (orthonormalised columns), ascending."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    return np.sort(np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1)))


@pytest.fixture(scope="module", params=sorted(SETTINGS))
def discovery(request):
    problem = build_problem(SETTINGS[request.param])
    return request.param, discover_subspace(problem, LOOP, TRAIN, threads=1)


# ---- the loop on the two settings --------------------------------------------------------
def test_escapes_zero_then_recovers_the_fixed_subspace(discovery):
    name, result = discovery
    steps = result.steps
    assert [s.status for s in steps] == ["enlarged", "enlarged", "converged"]
    assert [s.basis.shape[1] for s in steps] == [0, 1, 2]
    r = [s.rmd_projected for s in steps]
    d = [s.threshold for s in steps]
    assert r[0] > d[0] and r[1] > d[1] and r[2] <= d[2]
    assert result.recovered_dim == 2
    fixed = FIXED[name].T
    angles = independent_angles(result.final_basis, fixed)
    assert angles.max() <= ANGLE_BOUND
    np.testing.assert_allclose(result.angles, angles, atol=1e-7)


def test_first_step_from_zero_moves_as_one_atom(discovery):
    """E₀ = {0}: identical particles, zero noise → one atom p ≠ 0, r₀ = 1/√2, E₁ = span{p}."""
    name, result = discovery
    step = result.steps[0]
    assert np.all(step.initial == 0.0)
    p = step.trained[0]
    assert np.abs(step.trained - p).max() <= 1e-6 * np.linalg.norm(p)
    assert np.linalg.norm(p) > 1e-2
    assert step.rmd_projected == pytest.approx(1 / np.sqrt(2), abs=1e-9)
    np.testing.assert_allclose(np.abs(step.next_basis[:, 0]), np.abs(p) / np.linalg.norm(p),
                               atol=1e-9)
    # the atom went into E^G: its distance from E^G is a small fraction of its size
    fixed = FIXED[name].T
    assert np.linalg.norm(p - fixed @ (fixed.T @ p)) <= 0.05 * np.linalg.norm(p)


def test_each_step_starts_on_its_subspace(discovery):
    _, result = discovery
    for step in result.steps:
        p = projector(step.basis)
        np.testing.assert_allclose(step.initial, step.initial @ p, atol=1e-12)
        assert step.rmd_projected == pytest.approx(rmd_to_projected(step.trained, p), abs=1e-12)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_start_on_the_fixed_subspace_stops_at_the_first_step(name):
    problem = build_problem(SETTINGS[name])
    result = discover_subspace(problem, LOOP, TRAIN, start=FIXED[name], threads=1)
    assert len(result.steps) == 1
    assert result.steps[0].status == "converged"
    assert result.steps[0].rmd_projected <= LOOP.threshold(0)
    assert result.recovered_dim == 2
    assert independent_angles(result.final_basis, FIXED[name].T).max() <= 1e-7


# ---- linear algebra ----------------------------------------------------------------------
def test_orthonormal_basis_spans_the_given_vectors():
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((3, 6))
    b = orthonormal_basis(vecs, 6)
    np.testing.assert_allclose(b.T @ b, np.eye(3), atol=1e-12)
    a = vecs.T
    np.testing.assert_allclose(projector(b), a @ np.linalg.solve(a.T @ a, a.T), atol=1e-10)
    assert orthonormal_basis([], 6).shape == (6, 0)


@pytest.mark.parametrize("vectors, fragment", [
    ([[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]], "linearly dependent"),
    ([[1.0, 0.0, 0.0]], "length D=4"),
    ([[1.0, np.nan, 0.0, 0.0]], "non-finite"),
])
def test_orthonormal_basis_rejects_bad_vectors(vectors, fragment):
    with pytest.raises(HeuristicError, match=fragment):
        orthonormal_basis(vectors, 4)


def planted_cloud(rng, n=200):
    """Cloud in R⁵: large arbitrary part inside span(e₀), scales 3 and 1 on u₁, u₂ ⟂ e₀."""
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    inside, u1, u2 = np.eye(5)[:, :1], q[:, 1], q[:, 2]
    u1 -= inside[:, 0] * u1[0]
    u1 /= np.linalg.norm(u1)
    u2 -= inside[:, 0] * u2[0] + u1 * (u1 @ u2)
    u2 /= np.linalg.norm(u2)
    c = rng.standard_normal((n, 3))
    cloud = 10 * c[:, :1] * inside[:, 0] + 3 * c[:, 1:2] * u1 + c[:, 2:3] * u2
    return cloud, inside, np.stack([u1, u2], axis=1)


def test_principal_directions_find_the_planted_directions():
    cloud, inside, planted = planted_cloud(np.random.default_rng(0))
    both, sig = principal_directions(cloud, inside, 0.2, "relative_singular_value")
    assert both.shape[1] == 2
    assert independent_angles(both, planted).max() < 1e-6
    # singular values: those of the residual, computed independently
    resid = cloud - cloud @ projector(inside)
    np.testing.assert_allclose(sig[:2], np.linalg.svd(resid, compute_uv=False)[:2])
    assert sig[2:] == pytest.approx(0.0, abs=1e-9)
    # the weaker direction has relative size ≈ 1/3 and explained variance ≈ 1/10
    one, _ = principal_directions(cloud, inside, 0.5, "relative_singular_value")
    assert one.shape[1] == 1 and independent_angles(one, planted[:, :1])[0] < 0.1
    assert principal_directions(cloud, inside, 0.05, "explained_variance")[0].shape[1] == 2
    assert principal_directions(cloud, inside, 0.2, "explained_variance")[0].shape[1] == 1


def test_principal_directions_of_a_cloud_on_the_subspace_are_none():
    cloud, inside, _ = planted_cloud(np.random.default_rng(1))
    on = cloud @ projector(inside)
    dirs, sig = principal_directions(on, inside, 0.2, "relative_singular_value")
    assert dirs.shape == (5, 0) and np.all(sig == 0.0)


def test_enlarge_keeps_the_old_basis_and_stays_orthonormal():
    rng = np.random.default_rng(2)
    b = orthonormal_basis(rng.standard_normal((2, 5)), 5)
    v = rng.standard_normal((5, 2))
    e = enlarge(b, v)
    assert e.shape == (5, 4)
    np.testing.assert_allclose(e[:, :2], b)
    np.testing.assert_allclose(e.T @ e, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(projector(e) @ v, v, atol=1e-12)
    assert enlarge(b, b[:, :1]).shape == (5, 2)  # nothing new: no extra column


def test_angles_pad_unmatched_fixed_directions_with_right_angles():
    fixed = FIXED["C2-matrix"].T
    tilt = 0.1
    line = np.cos(tilt) * fixed[:, :1] + np.sin(tilt) * np.array([[1.0], [0], [0], [-1]]) / 2**0.5
    np.testing.assert_allclose(angles_to(line, fixed), [tilt, np.pi / 2], atol=1e-12)
    np.testing.assert_allclose(angles_to(np.zeros((4, 0)), fixed), [np.pi / 2] * 2)


def test_decide_orders_the_outcomes():
    assert decide(0, 0.01, 0.05, 3, 4) == "converged"
    assert decide(3, 0.05, 0.05, 3, 4) == "converged"  # the threshold itself stops
    assert decide(0, 0.5, 0.05, 0, 4) == "no_new_direction"
    assert decide(3, 0.5, 0.05, 1, 4) == "max_steps"
    assert decide(2, 0.5, 0.05, 1, 4) == "enlarged"
    assert decide(1, 1e-16, 0.0, 0, 4, stayed=True) == "converged"


def test_a_cloud_on_the_whole_space_has_stayed():
    """E_j = Z: the residual is rounding only, so the step converges even with d_j = 0."""
    problem = build_problem(SETTINGS["C2-matrix"])
    loop = HeuristicConfig(N=8, thresholds=0.0)
    result = discover_subspace(problem, loop, TrainConfig(**TINY_TRAIN), start=np.eye(4))
    assert [s.status for s in result.steps] == ["converged"]


# ---- configuration -----------------------------------------------------------------------
def test_threshold_per_step_repeats_the_last():
    cfg = HeuristicConfig(thresholds=[0.3, 0.1])
    assert [cfg.threshold(j) for j in range(4)] == [0.3, 0.1, 0.1, 0.1]
    assert HeuristicConfig(thresholds=0.2).threshold(5) == 0.2


@pytest.mark.parametrize("values, fragment", [
    ({"tolerance": 0.0}, "heuristic.tolerance = 0.0"),
    ({"tolerance": 1.5}, "must be in \\(0, 1\\]"),
    ({"thresholds": []}, "heuristic.thresholds"),
    ({"thresholds": [0.1, -0.1]}, "numbers in \\[0, 1\\]"),
    ({"criterion": "pca"}, "allowed: \\['relative_singular_value', 'explained_variance'\\]"),
    ({"N": 0}, "heuristic.N = 0"),
    ({"max_steps": 0}, "heuristic.max_steps = 0"),
    ({"tolerence": 0.2}, "unknown heuristic key\\(s\\) \\['tolerence'\\]"),
])
def test_bad_loop_settings_are_named(values, fragment):
    with pytest.raises(HeuristicError, match=fragment):
        HeuristicConfig.from_dict(values)


def shipped(name="config.yaml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "config/paper.yaml"])
def test_shipped_heuristic_sections_are_valid(name):
    cfg = shipped(name)
    check_config(cfg, load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    check_section(cfg["heuristic"], cfg["training"])
    assert [s["name"] for s in cfg["heuristic"]["settings"]] == ["C2-matrix", "S3-uv", "SO2-uv"]


def bad_section(edit):
    cfg = shipped()
    section = copy.deepcopy(cfg["heuristic"])
    edit(section)
    return section, cfg["training"]


@pytest.mark.parametrize("edit, fragment", [
    (lambda s: s["settings"].append(copy.deepcopy(s["settings"][0])), "names must be distinct"),
    (lambda s: s["settings"][0].update(start=[[1.0, 0.0]]), "length D=4"),
    (lambda s: s["settings"][1].update(teacher="arbitrary"), "needs symmetric data"),
    (lambda s: s["settings"][1]["data"].update(teacher_source="paper"), "impossible here"),
    (lambda s: s["training"].update(batch_size=0), "heuristic.training: training.batch_size"),
])
def test_bad_sections_stop_before_any_training(edit, fragment):
    with pytest.raises(HeuristicError, match=fragment):
        check_section(*bad_section(edit))


# ---- files: the pipeline's step chain, heuristic.nc, the figure ----------------------------
TINY_TRAIN = {"T": 0.5, "batch_size": 50, "n_snapshots": 2, "n_eval": 64}
TINY_LOOP = {"N": 16, "seed": 1, "thresholds": [0.0], "tolerance": 0.9,
             "criterion": "relative_singular_value", "max_steps": 3, "training": TINY_TRAIN}


def test_step_files_reproduce_the_in_memory_loop(tmp_path):
    """step_job chained through files = discover_subspace; thresholds 0 run to max_steps."""
    setting = SETTINGS["C2-matrix"]
    config = {"heuristic": TINY_LOOP}
    paths, previous = [], None
    for j in range(TINY_LOOP["max_steps"]):
        paths.append(tmp_path / f"step{j}.nc")
        step_job(setting, TINY_LOOP, {}, j, previous, paths[-1], config, threads=1)
        previous = paths[-1]
        if step_is_final(previous):
            break
    loop = HeuristicConfig.from_dict({k: v for k, v in TINY_LOOP.items() if k != "training"})
    memory = discover_subspace(build_problem(setting), loop, TrainConfig(**TINY_TRAIN))
    assert len(paths) == len(memory.steps) == 3
    assert memory.steps[-1].status == "max_steps"
    for path, step in zip(paths, memory.steps, strict=True):
        ds = read_dataset(path)
        k = int(ds["subspace_dim"][0])
        np.testing.assert_array_equal(ds["basis"].values[0][:, :k], step.basis)
        np.testing.assert_array_equal(ds["trained_particles"].values[0], step.trained)
        assert int(ds["status"][0]) == STATUS[step.status]
    with pytest.raises(HeuristicError, match="ended the loop"):
        step_job(setting, TINY_LOOP, {}, 3, paths[-1], tmp_path / "step3.nc", config)
    assert not (tmp_path / "step3.nc").exists()

    setting_job(setting, paths, tmp_path / "C2.nc", config)
    combine_job([tmp_path / "C2.nc"], tmp_path / "heuristic.nc", config)
    ds = read_dataset(tmp_path / "heuristic.nc")
    assert ds.attrs["config_json"] and list(ds["setting"].values) == ["C2-matrix"]
    assert int(ds["recovered_dim"].sel(setting="C2-matrix")) == memory.recovered_dim


@pytest.fixture(scope="module")
def two_settings():
    """C₂/matrix started on E^G (1 step) and S₃/uv from {0} (2 steps, max_steps): D, steps
    and N differ between the settings."""
    c2 = discover_subspace(build_problem(SETTINGS["C2-matrix"]),
                           HeuristicConfig(N=12, max_steps=2, thresholds=0.5),
                           TrainConfig(**TINY_TRAIN), start=FIXED["C2-matrix"])
    s3 = discover_subspace(build_problem(SETTINGS["S3-uv"]),
                           HeuristicConfig(N=16, max_steps=2, thresholds=0.0),
                           TrainConfig(**TINY_TRAIN))
    return combine_settings([discovery_dataset(c2), discovery_dataset(s3)]), (c2, s3)


def test_heuristic_file_pads_settings_and_keeps_the_contract(tmp_path, two_settings):
    combined, (c2, s3) = two_settings
    path = write_dataset(combined, tmp_path / "heuristic.nc", {"t": 1}, "two settings")
    ds = read_dataset(path)
    assert list(ds["dim_z"].values) == [4, 6] and list(ds["n_particles"].values) == [12, 16]
    assert list(ds["n_steps"].values) == [1, 2]
    assert ds["status"].sel(setting="C2-matrix").values.tolist() == [STATUS["converged"],
                                                                     STATUS["not_run"]]
    c2_particles = ds["trained_particles"].sel(setting="C2-matrix", step=0).values
    np.testing.assert_array_equal(c2_particles[:12, :4], c2.steps[0].trained)
    assert np.all(c2_particles[12:] == 0) and np.all(c2_particles[:, 4:] == 0)
    np.testing.assert_array_equal(ds["subspace_dim"].sel(setting="S3-uv").values, [0, 1])
    assert ds["principal_angles"].attrs["units"] == "rad"
    outcome = heuristic_outcome(ds)  # what the manuscript reads
    assert outcome["settings"] == 2 and outcome["matched"] == 1
    assert outcome["recovered_dim"] == 1 and outcome["true_dim"] == 2
    assert outcome["max_angle_deg"] == pytest.approx(90.0)


def test_figure_has_a_row_per_setting_and_is_written(tmp_path, two_settings):
    combined, _ = two_settings
    fig = plot_heuristic(combined)
    shown = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
    assert len(shown) == 1 + 2 + 2  # C2: one step + diagnostic; S3: two steps + diagnostic
    path = write_dataset(combined, tmp_path / "heuristic.nc", {"t": 1}, "two settings")
    out = {"pdf": tmp_path / "fig.pdf", "png": tmp_path / "fig.png"}
    heuristic_job(path, {"context": "paper", "style": "whitegrid", "dpi": 60,
                         "log_floor": 1e-6}, out)
    assert out["pdf"].read_bytes()[:4] == b"%PDF"
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_pipeline_resolves_the_number_of_steps_at_run_time(tmp_path):
    """Snakemake runs one checkpoint job per step until a step ends the loop: C₂ started on
    Z itself stops at step 0, S₃ from {0} runs until max_steps; a rerun has nothing to do."""
    from pipeline_sandbox import local, merged, repo_config, sandbox, snakemake

    cfg = merged(repo_config(), {"heuristic": {
        "N": 16, "thresholds": [0.0], "tolerance": 0.9, "max_steps": 3, "training": TINY_TRAIN,
    }})
    # the two settings whose chains are checked (a third would only add jobs)
    cfg["heuristic"]["settings"] = [s for s in cfg["heuristic"]["settings"]
                                    if s["name"] in ("C2-matrix", "S3-uv")]
    assert [s["name"] for s in cfg["heuristic"]["settings"]] == ["C2-matrix", "S3-uv"]
    cfg["heuristic"]["settings"][0]["start"] = np.eye(4).tolist()
    wf = sandbox(tmp_path / "wf", cfg)
    targets = ("results/heuristic.nc", "results/figures/fig_heuristic.png")
    snakemake(wf, *local(*targets))
    ds = read_dataset(wf / "results" / "heuristic.nc")
    for name in ("C2-matrix", "S3-uv"):
        files = sorted((wf / "results" / "heuristic" / name).glob("step*.nc"))
        n = int(ds["n_steps"].sel(setting=name))
        assert [f.name for f in files] == [f"step{j}.nc" for j in range(n)]
        status = ds["status"].sel(setting=name).values[:n]
        assert all(s == STATUS["enlarged"] for s in status[:-1])
        assert status[-1] != STATUS["enlarged"]
    assert int(ds["n_steps"].sel(setting="C2-matrix")) == 1
    assert int(ds["n_steps"].sel(setting="S3-uv")) == 3
    assert (wf / "results" / "figures" / "fig_heuristic.pdf").stat().st_size > 1000
    again = snakemake(wf, *local(*targets))
    assert "Nothing to be done" in again.stdout + again.stderr
