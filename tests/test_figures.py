"""Figures: what they draw (values, axes, labels) and how they are written."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from mfsym.figures import module_file
from mfsym.figures.curves import plot_curves
from mfsym.figures.particles import complement_basis, plot_particles, view_coordinates
from mfsym.figures.rmd import plot_rmd
from mfsym.figures.style import apply_style, save_figure, scheme_colors, seed_band
from mfsym.records.atomic import verify_file

TEACHERS = ["arbitrary", "WI", "SI"]
SCHEMES = ["vanilla", "DA", "FA", "EA"]
PAIRS = ["vanilla-DA", "vanilla-FA", "DA-FA", "vanilla-EA", "DA-EA", "FA-EA"]
NS = [5, 10, 50]


def summary(seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (2, len(NS), 3, 4, 3)
    run_dims = ("init", "N", "teacher", "scheme", "seed")
    rp = rng.uniform(0.01, 0.5, shape)
    rp[:, :, :, SCHEMES.index("EA")] = 0.0  # exactly on E^G
    data = {
        "rmd_projected": (run_dims, rp),
        "rmd_symmetrized": (run_dims, rng.uniform(0.01, 0.5, shape)),
        "population_risk": (run_dims, rng.uniform(0.01, 1, shape)),
        "rmd_between": (("init", "N", "teacher", "pair", "seed"),
                        rng.uniform(0.01, 0.5, (2, len(NS), 3, 6, 3))),
    }
    for name in ("risk_curve", "train_loss_curve", "rmd_projected_curve"):
        data[name] = ((*run_dims, "time"), rng.uniform(0.01, 1, (*shape, 4)))
    return xr.Dataset(data, coords={"init": ["SI", "WI"], "N": NS, "teacher": TEACHERS,
                                    "scheme": SCHEMES, "seed": [0, 1, 2], "pair": PAIRS,
                                    "time": [0.0, 0.02, 2.0, 20.0]})


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def line(ax, label):
    return next(ln for ln in ax.get_lines() if ln.get_label() == label)


@pytest.mark.parametrize(("init", "var"), [("SI", "rmd_projected"), ("WI", "rmd_symmetrized")])
@pytest.mark.parametrize("quantity", ["RMD", "RMD2"])
def test_rmd_figure_draws_the_seed_means(init, var, quantity):
    ds = summary()
    fig = plot_rmd(ds, init, quantity, "minmax", log_floor=1e-6)
    axes = np.array(fig.axes).reshape(3, 3)
    power = 2 if quantity == "RMD2" else 1
    for c, teacher in enumerate(TEACHERS):
        for scheme in ("vanilla", "DA"):
            want = (ds[var].sel(init=init, teacher=teacher, scheme=scheme) ** power).mean("seed")
            np.testing.assert_allclose(line(axes[0, c], scheme).get_ydata(), want.values)
            np.testing.assert_allclose(line(axes[0, c], scheme).get_xdata(), NS)
        for row, pair in ((1, "DA-FA"), (2, "FA-EA")):
            want = (ds["rmd_between"].sel(init=init, teacher=teacher, pair=pair) ** power)
            np.testing.assert_allclose(line(axes[row, c], pair).get_ydata(),
                                       want.mean("seed").values)
        assert axes[0, c].get_xscale() == "log" and axes[0, c].get_yscale() == "log"
    label = "RMD²" if quantity == "RMD2" else "RMD"
    assert axes[0, 0].get_ylabel().startswith(label + " ")
    assert axes[2, 0].get_ylabel() == f"{label} to EA"


def test_rmd_figure_floors_exact_zeros():
    fig = plot_rmd(summary(), "SI", log_floor=1e-7)
    ea = line(fig.axes[0], "EA").get_ydata()
    np.testing.assert_array_equal(ea, np.full(len(NS), 1e-7))


def test_rmd_figure_without_ea_has_two_rows():
    ds = summary().sel(scheme=["vanilla", "DA", "FA"], pair=["vanilla-DA", "vanilla-FA",
                                                              "DA-FA"])
    fig = plot_rmd(ds, "SI")
    assert len(fig.axes) == 2 * 3


def test_rmd_figure_refuses_a_missing_init():
    with pytest.raises(ValueError, match="no 'WI' runs"):
        plot_rmd(summary().sel(init=["SI"]), "WI")
    with pytest.raises(ValueError, match="allowed"):
        plot_rmd(summary(), "XI")


def test_curves_use_the_largest_n_by_default():
    ds = summary()
    fig = plot_curves(ds, None, "std")
    ax = np.array(fig.axes).reshape(4, 3)
    want = ds["risk_curve"].sel(init="WI", N=max(NS), teacher="SI", scheme="FA").mean("seed")
    np.testing.assert_allclose(line(ax[3, 2], "FA").get_ydata(), want.values)
    assert "N = 50" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="N = 7 is not in the summary"):
        plot_curves(ds, 7)


def test_seed_band():
    v = np.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
    mean, lo, hi = seed_band(v, "minmax")
    np.testing.assert_allclose(mean, [3.0, 1.0])
    np.testing.assert_allclose(lo, [1.0, 0.0])
    np.testing.assert_allclose(hi, [6.0, 3.0])
    mean, lo, hi = seed_band(v, "std")
    np.testing.assert_allclose(hi - mean, v.std(axis=1))
    with pytest.raises(ValueError, match="allowed"):
        seed_band(v, "iqr")


def test_scheme_colors_are_fixed_across_figures():
    assert scheme_colors(["EA", "vanilla"])["EA"] == scheme_colors(SCHEMES)["EA"]
    assert len(set(scheme_colors(SCHEMES).values())) == 4


def test_complement_and_view_along_eg(c2_matrix):
    basis = c2_matrix.group.fixed_basis()
    comp = complement_basis(basis)
    full = np.concatenate([basis, comp], axis=1)
    np.testing.assert_allclose(full.T @ full, np.eye(4), atol=1e-12)
    rng = np.random.default_rng(0)
    on_eg = c2_matrix.group.project(rng.standard_normal((20, 4)))
    view, labels = view_coordinates(on_eg, basis)
    np.testing.assert_allclose(view, 0, atol=1e-12)  # E^G collapses to the origin
    off = rng.standard_normal((20, 4))
    resid = off - c2_matrix.group.project(off)
    np.testing.assert_allclose(np.linalg.norm(view_coordinates(off, basis)[0], axis=1),
                               np.linalg.norm(resid, axis=1), atol=1e-12)
    assert len(labels) == 2


def runs_dataset(group, rng) -> xr.Dataset:
    final = rng.standard_normal((3, 4, 2, 8, 4))
    final[:, 3] = group.project(final[:, 3])
    return xr.Dataset(
        {"final_particles": (("teacher", "scheme", "seed", "particle", "coord"), final)},
        coords={"teacher": TEACHERS, "scheme": SCHEMES, "seed": [0, 1]},
        attrs={"N": 8, "init": "SI"},
    )


def test_particle_figure_draws_every_scheme(c2_matrix):
    group = c2_matrix.group
    runs = runs_dataset(group, np.random.default_rng(1))
    teacher = group.project(np.random.default_rng(2).standard_normal((5, 4)))
    fig = plot_particles(runs, teacher, group.fixed_basis(), "SI", 1)
    flat = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    titles = [ax.get_title() for ax in flat if ax.name == "3d"]
    assert titles == SCHEMES
    ea_view = [ax for ax in flat if ax.name != "3d"][3]
    students = ea_view.collections[0].get_offsets()
    np.testing.assert_allclose(students, 0, atol=1e-12)  # EA sits on E^G
    (text,) = [t.get_text() for t in ea_view.texts]
    assert text.startswith("RMS distance to $E^G$: ") and float(text.split(": ")[1]) < 1e-12
    free = [ax for ax in flat if ax.name != "3d"][0].texts[0].get_text()
    resid = runs["final_particles"].sel(teacher="SI", seed=1, scheme="vanilla").values
    resid = resid - group.project(resid)
    assert float(free.split(": ")[1]) == pytest.approx(np.sqrt((resid**2).sum(1).mean()),
                                                       rel=0.06)
    with pytest.raises(ValueError, match="seed=7"):
        plot_particles(runs, teacher, group.fixed_basis(), "SI", 7)


def test_save_figure_writes_both_formats_atomically(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = {"pdf": tmp_path / "f" / "a.pdf", "png": tmp_path / "f" / "a.png"}
    save_figure(fig, out, dpi=50)
    assert out["pdf"].read_bytes()[:4] == b"%PDF"
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [
        "a.pdf", "a.pdf.sha256", "a.png", "a.png.sha256"
    ]
    assert all(verify_file(path) for path in out.values())
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="svg"):
        save_figure(fig, {"svg": tmp_path / "b.svg"}, dpi=50)
    assert not (tmp_path / "b.svg").exists()


def _busy_figure(pyplot: bool):
    """Two panels, a suptitle and a legend outside the axes: the tight box matters."""
    from matplotlib.figure import Figure

    apply_style()
    fig = plt.figure(figsize=(5, 3)) if pyplot else Figure(figsize=(5, 3))
    axes = fig.subplots(1, 2)
    for k, ax in enumerate(axes):
        ax.plot(np.arange(5), np.arange(5) ** (k + 1), label=f"curve {k}")
        ax.set_yscale("log")
        ax.set_xlabel("N (particles)")
    fig.suptitle("a title above both panels")
    fig.legend(loc="outside right upper")
    return fig


@pytest.mark.parametrize("pyplot", [True, False], ids=["pyplot", "bare Figure"])
def test_save_figure_matches_matplotlibs_own_tight_save(tmp_path, pyplot):
    """The single layout of ``save_figure`` gives the page and the pixels that
    matplotlib's ``savefig(bbox_inches="tight")`` gives with its layout per format."""
    from PIL import Image

    ours = {"pdf": tmp_path / "ours.pdf", "png": tmp_path / "ours.png"}
    save_figure(_busy_figure(pyplot), ours, dpi=60)
    ref = _busy_figure(pyplot)
    for fmt in ("pdf", "png"):
        ref.savefig(tmp_path / f"ref.{fmt}", format=fmt, dpi=60, bbox_inches="tight")
    a = np.asarray(Image.open(ours["png"]).convert("L"), dtype=float)
    b = np.asarray(Image.open(tmp_path / "ref.png").convert("L"), dtype=float)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 0.5  # a handful of anti-aliased pixels at most

    def media_box(path):
        text = path.read_bytes().decode("latin-1")
        return [float(v) for v in text.split("/MediaBox [")[1].split("]")[0].split()]

    assert media_box(ours["pdf"]) == pytest.approx(media_box(tmp_path / "ref.pdf"), abs=1.0)


def test_module_file_names_an_existing_module():
    assert Path(module_file("rmd")).name == "rmd.py" and Path(module_file("rmd")).is_file()
    with pytest.raises(ValueError, match="nosuch"):
        module_file("nosuch")


def test_rotation_rmd_figure_names_the_setting_and_the_orbit_of_nu_g():
    ds = summary()
    ds.attrs.update(setting="SO2-uv", symmetrized_points=16)
    fig = plot_rmd(ds, "WI", "RMD", "minmax", log_floor=1e-6)
    assert fig._suptitle.get_text().startswith("SO2-uv, WI initialisation")
    assert "16-point orbit" in fig.axes[0].get_ylabel()


def test_fa_quadrature_figure_draws_the_seed_means_against_k():
    from mfsym.figures.rotation import plot_fa_quadrature

    rng = np.random.default_rng(1)
    ks = [1, 2, 4, 8]
    dims = ("init", "K", "seed")
    values = {v: rng.uniform(1e-12, 1.0, (2, 4, 3)) for v in ("model_distance",
                                                               "rmd_projected")}
    ds = xr.Dataset({v: (dims, a) for v, a in values.items()},
                    coords={"init": ["SI", "WI"], "K": ks, "seed": [0, 1, 2]},
                    attrs={"group": "SO2", "N": 50, "teacher": "arbitrary",
                           "reference_points": 256})
    fig = plot_fa_quadrature(ds, "minmax", log_floor=1e-16)
    for ax, var in zip(fig.axes, ("model_distance", "rmd_projected"), strict=True):
        for i, init in enumerate(("SI", "WI")):
            drawn = line(ax, f"{init} start")
            np.testing.assert_array_equal(drawn.get_xdata(), ks)
            np.testing.assert_allclose(drawn.get_ydata(), values[var][i].mean(-1))
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
