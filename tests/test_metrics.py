"""Shared inputs, one job's run dataset, per-run metrics and their aggregation."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from conftest import same_atoms
from scipy.spatial.distance import cdist

from mfsym.core.teachers import read_teachers
from mfsym.engine.kernels import select_kernel
from mfsym.measure.metrics import rmd_between_schemes, run_metrics
from mfsym.pipeline import data as mdata
from mfsym.pipeline.config import build_group, build_unit
from mfsym.pipeline.metrics import metrics_job
from mfsym.pipeline.runs import train_block, train_job
from mfsym.pipeline.summary import aggregate, summary_job
from mfsym.records.results import read_dataset, write_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
GROUP, UNIT = CONFIG["group"], CONFIG["unit"]
PAIRS = CONFIG["metrics"]["pairs"]
TEACHERS = ["arbitrary", "WI", "SI"]
SCHEMES = ["vanilla", "DA", "FA", "EA"]


def tiny_training(**over) -> dict:
    return {**CONFIG["training"], "T": 1.0, "n_eval": 64, "n_snapshots": 3,
            "checkpoint_every": 0, **over}


def setting(**over) -> dict:
    return {"group": GROUP, "unit": UNIT, "training": tiny_training(**over), "schemes": SCHEMES}


def inputs(init: str, n: int, seeds, training: dict) -> dict[str, xr.Dataset]:
    return {
        "teachers": mdata.teacher_dataset(GROUP, UNIT, TEACHERS, CONFIG["data"]),
        "initial": mdata.initial_dataset(GROUP, UNIT, training, init, n, seeds),
        "eval": mdata.evaluation_dataset(GROUP, training),
    }


@pytest.fixture(scope="module")
def group():
    return build_group(GROUP, UNIT)


@pytest.fixture(scope="module")
def si_runs():
    s = setting()
    return train_block(s, "SI", 6, inputs("SI", 6, [0, 1], s["training"]))


# ---- shared inputs ----------------------------------------------------------------------
def test_teacher_dataset_round_trip(tmp_path, group):
    ds = mdata.teacher_dataset(GROUP, UNIT, TEACHERS, CONFIG["data"])
    path = write_dataset(ds, tmp_path / "t.nc", CONFIG, "teachers")
    back = read_teachers(read_dataset(path))
    assert list(back) == TEACHERS
    assert [back[k].particles.shape[0] for k in TEACHERS] == [5, 10, 5]
    np.testing.assert_allclose(group.project(back["SI"].particles), back["SI"].particles,
                               atol=1e-12)


def test_initial_particles_are_shared_and_si_is_the_projected_wi(group):
    training = tiny_training()
    wi = mdata.initial_dataset(GROUP, UNIT, training, "WI", 7, [2, 5])
    si = mdata.initial_dataset(GROUP, UNIT, training, "SI", 7, [2, 5])
    assert wi["initial_particles"].shape == (2, 7, 4)
    np.testing.assert_allclose(si["initial_particles"].values,
                               group.project(wi["initial_particles"].values), atol=1e-12)
    # a seed's cloud does not depend on which block holds it
    alone = mdata.initial_dataset(GROUP, UNIT, training, "WI", 7, [5])
    np.testing.assert_array_equal(alone["initial_particles"].sel(seed=5),
                                  wi["initial_particles"].sel(seed=5))
    assert mdata.read_initial(wi).keys() == {2, 5}


def test_evaluation_sample_has_the_configured_spread():
    ds = mdata.evaluation_dataset(GROUP, tiny_training(n_eval=4000, input_std=3.0))
    assert ds["x_eval"].shape == (4000, 2)
    assert abs(ds["x_eval"].values.std() - 3.0) < 0.15


# ---- one training job -------------------------------------------------------------------
def test_run_dataset_layout(si_runs):
    assert dict(si_runs.sizes) == {"teacher": 3, "scheme": 4, "seed": 2, "time": 3,
                                   "particle": 6, "coord": 4}
    assert list(si_runs["teacher"].values) == TEACHERS
    assert si_runs["time"].values[0] == 0 and si_runs["time"].values[-1] == 1.0
    assert si_runs["step"].values[-1] == 6  # N·T steps
    assert si_runs.attrs["init"] == "SI" and si_runs.attrs["N"] == 6


def test_every_teacher_and_scheme_starts_from_the_seeds_cloud(si_runs):
    s = setting()
    init = inputs("SI", 6, [0, 1], s["training"])["initial"]["initial_particles"]
    start = si_runs["initial_particles"]
    for t, sc in itertools.product(TEACHERS, SCHEMES):
        np.testing.assert_allclose(start.sel(teacher=t, scheme=sc).values, init.values)


def test_ea_stays_on_eg_and_vanilla_leaves_it(si_runs, group):
    final = si_runs["final_particles"]
    ea = final.sel(scheme="EA").values
    np.testing.assert_allclose(group.project(ea), ea, atol=1e-5)
    van = final.sel(scheme="vanilla", teacher="arbitrary").values
    assert np.abs(group.project(van) - van).max() > 1e-3


def test_wrong_initial_file_is_refused():
    s = setting()
    ins = inputs("SI", 6, [0], s["training"])
    with pytest.raises(ValueError, match="init='WI'"):
        train_block(s, "WI", 6, ins)


def test_train_job_writes_and_removes_its_checkpoint(tmp_path):
    s = setting(checkpoint_every=2, T=2.0)
    paths = {}
    for key, ds in inputs("WI", 3, [4], s["training"]).items():
        paths[key] = str(write_dataset(ds, tmp_path / f"{key}.nc", CONFIG, key))
    ckpt = tmp_path / "ck" / "job.npz"
    out = tmp_path / "runs.nc"
    train_job(s, "WI", 3, paths, out, CONFIG, checkpoint_path=ckpt, threads=1)
    ds = read_dataset(out)
    assert ds.attrs["N"] == 3 and list(ds["seed"].values) == [4]
    assert "config_sha256" in ds.attrs
    assert not ckpt.exists()


def test_run_file_and_summary_state_backend_dtype_and_device(tmp_path):
    """Two jobs trained on different kernels and dtypes: the run files and the summary
    built from them say which trained each (init, N, seed)."""
    metrics, backends = [], []
    for seed, backend, dtype in ((0, "eager", "float64"), (1, "auto", "float32")):
        s = setting(backend=backend, dtype=dtype, device="cpu")
        paths = {}
        for key, ds in inputs("SI", 3, [seed], s["training"]).items():
            paths[key] = str(write_dataset(ds, tmp_path / f"{key}{seed}.nc", CONFIG, key))
        run = tmp_path / f"runs{seed}.nc"
        train_job(s, "SI", 3, paths, run, CONFIG)
        ds = read_dataset(run)
        chosen = select_kernel(build_unit(GROUP, UNIT), backend, torch.device("cpu"),
                               torch.float32).name
        assert ds.attrs["backend"].split(" ")[0] == chosen
        assert (ds.attrs["dtype"], ds.attrs["device"]) == (dtype, "cpu")
        backends.append(ds.attrs["backend"])
        metrics.append(tmp_path / f"metrics{seed}.nc")
        metrics_job(GROUP, UNIT, PAIRS, run, metrics[-1], CONFIG)
    grid = {"inits": ["SI"], "N": [3], "teachers": TEACHERS, "schemes": SCHEMES,
            "seeds": [0, 1], "pairs": PAIRS}
    summary_job(metrics, tmp_path / "summary.nc", CONFIG, grid)
    summary = read_dataset(tmp_path / "summary.nc")
    cells = summary.sel(init="SI", N=3)
    assert list(cells["training_backend"].values) == backends
    assert list(cells["training_dtype"].values) == ["float64", "float32"]
    assert list(cells["training_device"].values) == ["cpu", "cpu"]
    assert summary.attrs["training_backend"] == " | ".join(sorted(set(backends)))
    assert summary.attrs["training_device"] == "cpu"


# ---- metrics ----------------------------------------------------------------------------
def brute_w2(a: np.ndarray, b: np.ndarray) -> float:
    """W₂² between equal-size uniform clouds by enumerating every matching."""
    cost = cdist(a, b, "sqeuclidean")
    n = len(a)
    return min(cost[range(n), list(p)].mean() for p in itertools.permutations(range(n)))


def brute_rmd(a: np.ndarray, b: np.ndarray) -> float:
    m2 = 2 * (a**2).sum(1).mean() + 2 * (b**2).sum(1).mean()
    return float(np.sqrt(brute_w2(a, b) / m2))


def fake_runs(final: np.ndarray, risk: np.ndarray | None = None) -> xr.Dataset:
    """A run dataset around ``final`` (teacher, scheme, seed, particle, coord)."""
    t, s, k, n, d = final.shape
    risk = np.random.default_rng(0).random((t, s, k, 2)) if risk is None else risk
    curves = {name: (("teacher", "scheme", "seed", "time"), risk)
              for name in ("population_risk", "train_loss", "rmd_projected")}
    return xr.Dataset(
        {"final_particles": (("teacher", "scheme", "seed", "particle", "coord"), final),
         **curves},
        coords={"teacher": TEACHERS[:t], "scheme": SCHEMES[:s], "seed": np.arange(k),
                "time": [0.0, 1.0]},
        attrs={"init": "SI", "N": n, "backend": "eager", "dtype": "float64", "device": "cpu"},
    )


def test_metrics_against_independent_computations(group):
    rng = np.random.default_rng(3)
    final = rng.standard_normal((1, 4, 2, 3, 4))
    ds = run_metrics(fake_runs(final), group, PAIRS)
    for s, k in itertools.product(range(4), range(2)):
        cloud = final[0, s, k]
        proj = group.project(cloud)
        # to projected: brute-force exact transport to the projected atoms
        assert ds["rmd_projected"].values[0, s, k] == pytest.approx(brute_rmd(cloud, proj))
        # to symmetrised: ν with each atom split in |G| halves vs the |G|·N atoms of ν^G
        sym = group.symmetrize(cloud)
        doubled = np.repeat(cloud, group.order, axis=0)
        assert ds["rmd_symmetrized"].values[0, s, k] == pytest.approx(brute_rmd(doubled, sym))
    for p, pair in enumerate(PAIRS):
        a, b = (SCHEMES.index(x) for x in pair.split("-"))
        for k in range(2):
            assert ds["rmd_between"].values[0, p, k] == pytest.approx(
                brute_rmd(final[0, a, k], final[0, b, k])
            )


def test_metrics_vanish_on_invariant_clouds(group):
    rng = np.random.default_rng(4)
    on_eg = group.project(rng.standard_normal((4, 4)))
    wi = group.symmetrize(rng.standard_normal((2, 4)))  # ν^G = ν, off E^G
    final = np.stack([on_eg, wi, on_eg, on_eg])[None, :, None]
    ds = run_metrics(fake_runs(final), group, PAIRS)
    rp, rs = ds["rmd_projected"].values[0, :, 0], ds["rmd_symmetrized"].values[0, :, 0]
    assert rp[0] == pytest.approx(0, abs=1e-12) and rs[0] == pytest.approx(0, abs=1e-7)
    assert rp[1] > 0.1 and rs[1] == pytest.approx(0, abs=1e-7)
    between = dict(zip(PAIRS, ds["rmd_between"].values[0, :, 0], strict=True))
    assert between["DA-FA"] > 0.1 and between["vanilla-FA"] == pytest.approx(0, abs=1e-7)


def test_rmd_between_ignores_the_particle_order(group):
    rng = np.random.default_rng(5)
    final = rng.standard_normal((2, 4, 1, 5, 4))
    perm = final.copy()
    perm[:, 1] = final[:, 1, :, rng.permutation(5)].transpose(1, 2, 0, 3)
    a = rmd_between_schemes(fake_runs(final)["final_particles"], ["vanilla-DA"])
    b = rmd_between_schemes(fake_runs(perm)["final_particles"], ["vanilla-DA"])
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert same_atoms(final[0, 1, 0], perm[0, 1, 0])


def test_risk_and_curves_come_from_training(group):
    rng = np.random.default_rng(6)
    risk = rng.random((1, 4, 2, 2))
    ds = run_metrics(fake_runs(rng.standard_normal((1, 4, 2, 3, 4)), risk), group, PAIRS)
    np.testing.assert_array_equal(ds["population_risk"].values, risk[..., -1])
    np.testing.assert_array_equal(ds["risk_curve"].values, risk)
    assert all("long_name" in ds[v].attrs and "units" in ds[v].attrs for v in ds.data_vars)


def test_pairs_naming_absent_schemes_are_refused(group):
    runs = fake_runs(np.zeros((1, 2, 1, 3, 4)))
    with pytest.raises(ValueError, match="EA"):
        run_metrics(runs, group, ["vanilla-EA"])


def test_metrics_job_on_a_trained_block(tmp_path, si_runs):
    path = write_dataset(si_runs, tmp_path / "runs.nc", CONFIG, "runs")
    metrics_job(GROUP, UNIT, PAIRS, path, tmp_path / "m.nc", CONFIG)
    m = read_dataset(tmp_path / "m.nc")
    # EA and FA keep an SI start on E^G; vanilla with the arbitrary teacher leaves it
    assert float(m["rmd_projected"].sel(scheme="EA").max()) < 1e-5
    assert float(m["rmd_projected"].sel(scheme="vanilla", teacher="arbitrary").min()) > 1e-3
    # RMD to projected of the final time equals the engine's own record
    np.testing.assert_allclose(m["rmd_projected"].values,
                               si_runs["rmd_projected"].isel(time=-1).values, atol=1e-6)


# ---- aggregation ------------------------------------------------------------------------
def block(init: str, n: int, seeds, rng) -> xr.Dataset:
    final = rng.standard_normal((3, 4, len(seeds), 3, 4))
    runs = fake_runs(final).assign_coords(seed=list(seeds))
    runs.attrs.update(init=init, N=n)
    return run_metrics(runs, build_group(GROUP, UNIT), PAIRS)


def test_aggregate_places_every_block(group):
    rng = np.random.default_rng(7)
    blocks = [block(i, n, s, rng) for i in ("WI", "SI") for n in (10, 5) for s in ([2], [0, 1])]
    summary = aggregate(blocks, ["SI", "WI"], [10, 5], TEACHERS, SCHEMES, [2, 0, 1], PAIRS)
    assert list(summary["N"].values) == [5, 10] and list(summary["seed"].values) == [0, 1, 2]
    assert list(summary["init"].values) == ["SI", "WI"]
    assert summary["rmd_projected"].dims == ("init", "N", "teacher", "scheme", "seed")
    assert summary["rmd_between"].dims == ("init", "N", "teacher", "pair", "seed")
    assert summary["risk_curve"].dims == ("init", "N", "teacher", "scheme", "seed", "time")
    for b in blocks:
        got = summary.sel(init=b.attrs["init"], N=b.attrs["N"], seed=b["seed"].values)
        for name in ("rmd_projected", "rmd_between", "train_loss_curve"):
            xr.testing.assert_allclose(got[name].drop_vars(["init", "N"]), b[name])


def test_aggregate_refuses_gaps_and_overlaps():
    rng = np.random.default_rng(8)
    one = block("SI", 5, [0], rng)
    with pytest.raises(ValueError, match=r"\('SI', 5, 1\) is missing"):
        aggregate([one], ["SI"], [5], TEACHERS, SCHEMES, [0, 1], PAIRS)
    with pytest.raises(ValueError, match="appears in 2 blocks"):
        aggregate([one, copy.deepcopy(one)], ["SI"], [5], TEACHERS, SCHEMES, [0], PAIRS)
    with pytest.raises(ValueError, match="no value"):
        aggregate([one], ["SI"], [5], TEACHERS, [*SCHEMES, "XX"], [0], PAIRS)


def test_a_chain_of_similar_problems_gives_each_its_own_exact_value(monkeypatch):
    """Clouds gathered around points far apart (the dense solver's case), N = 300: the
    second and third problems are the first's clouds moved by 1e-4 atom by atom and get
    its potentials as a hint; the fourth is unrelated and gets none.  Each value is the
    exact W₂ of its own problem (POT's network simplex on the full cost matrix)."""
    import ot

    import mfsym.measure.assignment as assignment
    from mfsym.measure import metrics

    rng = np.random.default_rng(4)
    centres = rng.normal(size=(5, 4))

    def cloud(shift):
        return centres[rng.integers(0, 5, 300)] + 0.1 * rng.normal(size=(300, 4)) + shift

    a, b = cloud(0.0), cloud(1.5)
    moved = [(a + 1e-4 * rng.normal(size=a.shape), b + 1e-4 * rng.normal(size=b.shape))
             for _ in range(2)]
    problems = [(a, b), *moved, (cloud(-1.0), cloud(2.0))]
    hinted = []
    edges = assignment._hinted_edges
    monkeypatch.setattr(assignment, "_hinted_edges",
                        lambda *args: hinted.append(1) or edges(*args))
    got = metrics.rmd_chain(problems)
    assert len(hinted) == 2
    for (x, y), value in zip(problems, got, strict=True):
        w = np.full(300, 1 / 300)
        w2 = ot.emd2(w, w, cdist(x, y, "sqeuclidean"), numItermax=10_000_000)
        m2 = 2 * (x**2).sum(1).mean() + 2 * (y**2).sum(1).mean()
        np.testing.assert_allclose(value, np.sqrt(w2 / m2), rtol=1e-10)
