"""Function-space distances between trained models, the same-scheme baseline and the
threaded W₂ path of the metrics stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from mfsym.core.groups import c2_swap
from mfsym.core.units import make_unit
from mfsym.measure.metrics import l2_distance, run_metrics, scheme_model, solve_all
from mfsym.measure.transport import rmd, rmd_to_symmetrized


@pytest.fixture(scope="module")
def setting():
    unit = make_unit("matrix", 2, 2, "sigmoid")
    return unit, unit.group(c2_swap())


def phi(unit, cloud, x):
    return unit.output(torch.as_tensor(cloud), torch.as_tensor(x)).numpy()


def test_each_scheme_model_is_as_its_scheme_defines_it(setting):
    unit, group = setting
    rng = np.random.default_rng(0)
    cloud, x = rng.standard_normal((7, 4)), 4 * rng.standard_normal((300, 2))
    np.testing.assert_allclose(scheme_model(unit, group, "vanilla", cloud, x), phi(unit, cloud, x))
    np.testing.assert_allclose(scheme_model(unit, group, "DA-orbit", cloud, x),
                               phi(unit, cloud, x))
    np.testing.assert_allclose(scheme_model(unit, group, "EA", cloud, x),
                               phi(unit, group.project(cloud), x))
    # FA: (1/|G|) Σ_g g⁻¹ Φ_N(g x), written out over the group
    fa = sum(phi(unit, cloud, x @ gx.T) @ np.linalg.inv(gy).T
             for gx, gy in zip(group.x, group.y, strict=True)) / group.order
    np.testing.assert_allclose(scheme_model(unit, group, "FA", cloud, x), fa)
    # FA's model is equivariant: f(P x) = P f(x), vanilla's in general is not
    p = group.x[1 - group.identity_index()]
    f = scheme_model(unit, group, "FA", cloud, x)
    np.testing.assert_allclose(scheme_model(unit, group, "FA", cloud, x @ p.T), f @ p.T)
    assert not np.allclose(phi(unit, cloud, x @ p.T), phi(unit, cloud, x) @ p.T)


def test_l2_distance_is_the_monte_carlo_norm():
    f, g = np.zeros((4, 2)), np.array([[3.0, 4.0]] * 2 + [[0.0, 0.0]] * 2)
    assert l2_distance(f, g) == pytest.approx(np.sqrt(12.5))
    assert l2_distance(g, g) == 0.0


def runs_dataset(rng, n=12, seeds=2):
    teachers, schemes = ["WI", "SI"], ["vanilla", "FA", "EA"]
    final = 0.3 * rng.standard_normal((len(teachers), len(schemes), seeds, n, 4))
    final[:, 1] = final[:, 0]  # FA's cloud equals vanilla's: only the model differs
    twin = final[:, 0] + 0.01 * rng.standard_normal((len(teachers), seeds, n, 4))
    time = np.array([0.0, 1.0])
    ds = xr.Dataset(
        {
            "final_particles": (("teacher", "scheme", "seed", "particle", "coord"), final),
            "baseline_final_particles": (("teacher", "seed", "particle", "coord"), twin),
            **{name: (("teacher", "scheme", "seed", "time"),
                      np.zeros((len(teachers), len(schemes), seeds, 2)))
               for name in ("population_risk", "train_loss", "rmd_projected")},
        },
        coords={"teacher": teachers, "scheme": schemes, "seed": np.arange(seeds),
                "time": time},
        attrs={"init": "WI", "N": n, "backend": "eager", "dtype": "float64", "device": "cpu",
               "coupling": "common", "baseline": "vanilla"},
    )
    return ds


def test_run_metrics_l2_and_baseline(setting):
    unit, group = setting
    rng = np.random.default_rng(1)
    runs = runs_dataset(rng)
    x = 4 * rng.standard_normal((256, 2))
    pairs = ["vanilla-FA", "vanilla-EA"]
    out = run_metrics(runs, group, pairs, unit=unit, x_eval=x)
    final = runs["final_particles"].values
    for t in range(2):
        for s in range(2):
            van = phi(unit, final[t, 0, s], x)
            fa = scheme_model(unit, group, "FA", final[t, 1, s], x)
            assert float(out["l2_between"][t, 0, s]) == pytest.approx(l2_distance(van, fa))
            assert float(out["rmd_between"][t, 0, s]) == 0.0  # same cloud, other model
            assert float(out["l2_between"][t, 0, s]) > 0.0
            twin = runs["baseline_final_particles"].values[t, s]
            assert float(out["rmd_baseline"][t, s]) == pytest.approx(rmd(final[t, 0, s], twin))
            assert float(out["l2_baseline"][t, s]) == pytest.approx(
                l2_distance(van, phi(unit, twin, x)))
    assert out.attrs["coupling"] == "common" and out.attrs["baseline"] == "vanilla"
    # without the evaluation sample: no function-space distances, the rest unchanged
    plain = run_metrics(runs, group, pairs)
    assert "l2_between" not in plain and "l2_baseline" not in plain
    np.testing.assert_array_equal(plain["rmd_baseline"], out["rmd_baseline"])


def test_threaded_solvers_equal_the_plain_exact_solver(setting):
    """The thread pool over a job's W₂ problems returns, in order, exactly what the plain
    solver returns for each problem on its own."""
    _, group = setting
    rng = np.random.default_rng(2)
    runs = runs_dataset(rng, n=40, seeds=3)
    pairs = ["vanilla-FA", "vanilla-EA", "FA-EA"]
    serial = run_metrics(runs, group, pairs, threads=1)
    threaded = run_metrics(runs, group, pairs, threads=3)
    for name in ("rmd_symmetrized", "rmd_between", "rmd_baseline"):
        np.testing.assert_array_equal(threaded[name].values, serial[name].values)
    final = runs["final_particles"].values
    for idx in np.ndindex(*final.shape[:3]):
        assert threaded["rmd_symmetrized"].values[idx] == rmd_to_symmetrized(final[idx], group)
    clouds = [(rng.standard_normal((30, 4)), rng.standard_normal((30, 4))) for _ in range(7)]
    tasks = [lambda a=a, b=b: rmd(a, b) for a, b in clouds]
    assert solve_all(tasks, threads=4) == [rmd(a, b) for a, b in clouds]
