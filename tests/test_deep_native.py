"""The fused C kernels of the deep settings (PAPER.md §10) against the eager reference.

* the mean-ODE ResNet (``csrc/mfsym_deep.c``) of the matrix unit at depths L = 1, 2, 4 and
  of the mlp unit, and the mlp ensemble (the mlp unit of ``csrc/mfsym_kernel.c``): whole
  float64 trainings with every scheme (vanilla, random-g DA, orbit DA, FA, EA) give the
  eager kernel's particles, losses and risks to rounding;
* the native results are the same bits with 1 or 2 threads, for a run alone or in a stack,
  on the run-parallel and on the chunk-parallel path;
* an SI start stays on E^G under EA, FA and orbit DA on the native path;
* the C source builds without warnings; the ResNet library is cached and checked like the
  one-layer ones; its wrapper refuses what it cannot compute.

Tolerance: the kernels sum over particles per chunk (8 lanes, float64 partial sums, then
in chunk order) and contract a·b + c into fused multiply-adds, torch sums in its own order:
each step differs from eager by a few units of the last place (about 1e-16), and these
differences are carried, neither damped nor blown up much, over the few dozen steps of a
test.  ``rtol = atol = 1e-11`` leaves a margin of about 10⁴ over the differences seen
(≤ 1e-15) while an error in the formulas (a sign, a factor 1/L, a missed layer) moves the
particles by far more than that after one step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess

import numpy as np
import pytest
import torch
from test_kernels import fa_spec, new_tally
from test_native_steps import check_gate, chunk_inputs

from mfsym.core.groups import c2_swap
from mfsym.core.teachers import paper_teachers, random_teacher
from mfsym.core.units import ACTIVATIONS, make_unit
from mfsym.engine import native
from mfsym.engine.kernels import (
    DeepNativeKernel,
    NativeKernel,
    NativeV1Kernel,
    select_kernel,
)
from mfsym.engine.models import ResNet, repeat_layers
from mfsym.engine.training import RunSpec, TrainConfig, train_stack

F64 = torch.float64
TOL = {"rtol": 1e-11, "atol": 1e-11}
SCHEMES = ("vanilla", "DA", "FA", "EA")


@pytest.fixture(autouse=True)
def _keep_threads():
    """train_stack(threads=…) sets torch's thread count: restore it after each test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def needs_native(model):
    try:
        select_kernel(model, "native", torch.device("cpu"), F64)
    except native.NativeUnavailable as exc:  # pragma: no cover - machine without a compiler
        pytest.skip(f"no native kernels here: {exc}")


def setting(label):
    """(model, group, teachers) for a label: ``resnetL`` (matrix sigmoid unit, the paper's
    teachers at every layer), ``resnet2-mlp`` (tanh mlp unit, hidden width 4) or ``mlp``
    (the one-layer ensemble of that mlp unit)."""
    if label.startswith("resnet") and not label.endswith("mlp"):
        unit = make_unit("matrix", 2, 2, "sigmoid")
        group = unit.group(c2_swap())
        depth = int(label[len("resnet"):])
        teachers = {k: type(t)(k, repeat_layers(t.particles, depth))
                    for k, t in paper_teachers(group).items()}
        return ResNet(unit, depth), group, teachers
    unit = make_unit("mlp", 2, 2, "tanh", hidden=4)
    group = unit.group(c2_swap())
    rng = np.random.default_rng(0)
    teachers = {k: random_teacher(group, k, 3, rng) for k in ("arbitrary", "WI", "SI")}
    if label == "mlp":
        return unit, group, teachers
    teachers = {k: type(t)(k, repeat_layers(t.particles, 2)) for k, t in teachers.items()}
    return ResNet(unit, 2), group, teachers


def cfg(backend, **kw):
    base = {"T": 2.0, "alpha": 2.0, "beta": 1e-4, "dtype": "float64", "n_eval": 64,
            "n_snapshots": 4, "rng_chunk": 8, "device": "cpu", "backend": backend}
    return TrainConfig(**{**base, **kw})


def train(label, backend, runs, n, init="WI", threads=None, **kw):
    model, group, teachers = setting(label)
    res = train_stack(group, model, teachers, runs, n, init, cfg(backend, **kw),
                      threads=threads)
    assert res.backend == backend, res.backend
    return res


def assert_same_training(a, b, **tol):
    for name in ("final_particles", "train_loss", "population_risk", "dist_fixed"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), err_msg=name, **tol)


@pytest.mark.parametrize("da_mode", ["random", "orbit"])
@pytest.mark.parametrize(
    ("label", "per_layer"),
    [("resnet1", 6), ("resnet2", 6), ("resnet4", 6), ("resnet2-mlp", 5), ("mlp", 10)],
)
def test_native_training_equals_eager_for_every_scheme(label, per_layer, da_mode):
    """Every scheme, WI start (the particles leave E^G), noise on: same training to rounding."""
    model = setting(label)[0]
    needs_native(model)
    n = per_layer * getattr(model, "depth", 1)
    runs = [RunSpec(t, s, 0) for t in ("WI", "arbitrary") for s in SCHEMES]
    eager = train(label, "eager", runs, n, da_mode=da_mode)
    nat = train(label, "native", runs, n, da_mode=da_mode)
    assert_same_training(nat, eager, **TOL)
    assert np.abs(nat.final_particles - nat.initial_particles).max() > 1e-3  # it trained


@pytest.mark.parametrize(("label", "n"), [("resnet2", 600), ("mlp", 150)])
def test_native_equals_eager_over_several_chunks(label, n):
    """Layers of more particles than one chunk (256 matrix / 64 mlp particles in float64):
    the per-chunk partial sums and the layer offsets of the particles and noise rows."""
    model = setting(label)[0]
    needs_native(model)
    runs = [RunSpec("WI", s, 1) for s in SCHEMES]
    kw = {"T": 0.05, "alpha": 5.0, "da_mode": "orbit"}
    assert_same_training(train(label, "native", runs, n, **kw),
                         train(label, "eager", runs, n, **kw), **TOL)


@pytest.mark.parametrize(("label", "n"), [("resnet4", 64), ("resnet2", 2000), ("mlp", 2000)])
def test_native_bits_do_not_depend_on_threads_or_on_the_stack(label, n):
    """threads 1 and 2, a stack of four runs (split over threads by run) and one of its runs
    alone (its chunks split over threads when the layer is large): the same bits."""
    model = setting(label)[0]
    needs_native(model)
    runs = [RunSpec(t, s, 2) for t, s in (("WI", "vanilla"), ("arbitrary", "FA"),
                                           ("WI", "EA"), ("arbitrary", "DA"))]
    kw = {"T": 8 / n}
    one = train(label, "native", runs, n, threads=1, **kw)
    two = train(label, "native", runs, n, threads=2, **kw)
    alone = {t: train(label, "native", runs[1:2], n, threads=t, **kw) for t in (1, 2)}
    for res in (two, alone[1], alone[2]):
        idx = slice(None) if res is two else slice(1, 2)
        np.testing.assert_array_equal(res.final_particles, one.final_particles[idx])
        np.testing.assert_array_equal(res.train_loss, one.train_loss[idx])
        np.testing.assert_array_equal(res.population_risk, one.population_risk[idx])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("label", ["resnet2", "resnet2-mlp"])
def test_k_deep_steps_in_one_call_equal_k_calls_of_one_step(label, threads):
    """``mfsym_deep_steps`` (K = 6 steps in one call, the engine's path) against six calls
    of the one-step ``mfsym_deep_fused``: projected model, drift and noise, an FA-like
    cotangent over 2 views, noise rows shared by runs, 350 particles per layer (two chunks):
    the same bits, losses and divergence marks; a NaN target at step 3 of run 1 marks that
    run alone, at its step."""
    model = setting(label)[0]
    needs_native(model)
    kern = DeepNativeKernel(model, F64)
    theta, x, y, xi = chunk_inputs(model, F64, N=700)
    spec = fa_spec(model, F64)
    bad = y.clone()
    bad[3, 1, 0, 0] = float("nan")

    def run(targets):
        many = new_tally(3)
        got = kern.advance_many(theta, x, targets, xi, spec, many, 40)
        one, th = new_tally(3, step=40), theta
        for k in range(x.shape[0]):
            one.step = 40 + k
            th = NativeV1Kernel.advance(kern, th, x[k], targets[k], xi[:, k], spec, one)
        return got, th, many, one

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        (got, th, many, one), (_, bad_th, bad_many, _) = run(y), run(bad)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, th)
    assert torch.equal(many.loss_acc, one.loss_acc)
    assert torch.isfinite(got).all() and not torch.equal(got, theta)
    assert many.first_bad.tolist() == [-1, -1, -1]
    assert bad_many.first_bad.tolist() == [-1, 43, -1]
    assert torch.isnan(bad_th[1]).all() and torch.equal(bad_th[[0, 2]], th[[0, 2]])


def runs_of(spec, R):
    """``spec`` of three runs cut to its first R (each per-run tensor's first R rows)."""
    cut = {name: getattr(spec, name)[:R] for name in
           ("proj", "proj_on", "noise_proj", "noise_on", "noise_row", "cot_l", "cot_on")
           if getattr(spec, name) is not None}
    return dataclasses.replace(spec, **cut)


@pytest.mark.parametrize("opens", ["never", "during the call", "before the call"])
@pytest.mark.parametrize(("label", "R", "N"), [("resnet2", 3, 700), ("resnet2-mlp", 3, 700),
                                              ("resnet2", 1, 4000)])
def test_deep_threads_at_a_gate_join_when_it_opens_and_the_bits_stay(label, R, N, opens):
    """``mfsym_deep_steps_gated`` (see ``check_gate``: the bits of the call without a gate,
    the gate opened during the call, before it or never).  R = 3: the team over runs (a
    gate that never opens leaves every run to the caller's thread); R = 1, M·S = 2000·20:
    a lone run whose layers' chunks go to OpenMP threads once the gate is open."""
    model = setting(label)[0]
    needs_native(model)
    theta, x, y, xi = chunk_inputs(model, F64, R=R, N=N, K=4, m=2, B=10, seed=3)
    check_gate(DeepNativeKernel(model, F64), theta, x, y, xi, runs_of(fa_spec(model, F64), R),
               opens)


def test_a_deep_stack_draws_its_next_chunk_ahead_on_two_threads(caplog):
    """On two threads the ResNet's kernel holds its second thread at a gate while the next
    chunk is drawn: the log says so, and the bits are those drawn in turn."""
    model, group, teachers = setting("resnet2")
    needs_native(model)
    runs = [RunSpec(t, s, 1) for t in ("WI", "arbitrary") for s in SCHEMES]
    conf = cfg("native", T=40 / 512)
    with caplog.at_level(logging.INFO, logger="mfsym"):
        ahead = train_stack(group, model, teachers, runs, 512, "WI", conf, threads=2)
    assert "next chunk drawn ahead" in caplog.text
    in_turn = train_stack(group, model, teachers, runs, 512, "WI", conf, threads=2,
                          draw_ahead=False)
    for name in ("final_particles", "train_loss", "population_risk"):
        np.testing.assert_array_equal(getattr(ahead, name), getattr(in_turn, name),
                                      err_msg=name)


@pytest.mark.parametrize("label", ["resnet2", "resnet4", "resnet2-mlp", "mlp"])
def test_si_start_stays_on_eg_on_the_native_path(label):
    """EA, FA and orbit DA keep an SI start on E^G to rounding; vanilla leaves it."""
    model = setting(label)[0]
    needs_native(model)
    n = 4 * getattr(model, "depth", 1)
    runs = [RunSpec(t, s, 0) for t in ("WI", "arbitrary") for s in ("EA", "FA", "DA")]
    res = train(label, "native", runs, n, init="SI", da_mode="orbit")
    assert res.rmd_projected.max() < 1e-12, res.rmd_projected.max(axis=1)
    assert res.dist_fixed.max() < 1e-12
    free = train(label, "native", [RunSpec("WI", "vanilla", 0)], n, init="SI")
    assert free.dist_fixed[0, -1] > 1e-6


def test_auto_on_the_cpu_picks_the_native_deep_kernels():
    for label, kind in (("resnet2", DeepNativeKernel), ("resnet2-mlp", DeepNativeKernel),
                        ("mlp", NativeKernel)):
        model = setting(label)[0]
        needs_native(model)
        kern = select_kernel(model, "auto", torch.device("cpu"), F64)
        assert type(kern) is kind and kern.name == "native"


def test_the_deep_wrapper_refuses_what_it_cannot_compute():
    model = setting("resnet2")[0]
    needs_native(model)
    lib = native.load_deep_library(model, F64)
    eye = torch.eye(4, dtype=F64).expand(1, 4, 4).contiguous()
    off = torch.zeros(1, dtype=torch.int8)
    with pytest.raises(ValueError, match="N = 5 particles per run, not a multiple of the depth"):
        lib.output(torch.zeros(1, 5, 4, dtype=F64), torch.zeros(1, 3, 2, dtype=F64), eye, off, 1)
    with pytest.raises(TypeError, match="theta has dtype torch.float32"):
        lib.output(torch.zeros(1, 6, 4), torch.zeros(1, 3, 2, dtype=F64), eye, off, 1)
    with pytest.raises(NotImplementedError, match="no per-particle native pull-back"):
        lib.force()
    uv = make_unit("uv", 2, 2, "tanh")
    with pytest.raises(native.NativeUnavailable, match="allowed units: \\['matrix', 'mlp'\\]"):
        native.deep_build(ResNet(uv, 2), F64)


def test_the_deep_library_is_cached_with_its_record_and_reused(tmp_path, monkeypatch, caplog):
    """The ResNet library goes through the one cache: its own key (depth and source in
    it), a record naming its variant, loaded back without a rebuild."""
    if native.find_compiler() is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv("MFSYM_KERNEL_CACHE", str(tmp_path / "cache"))
    model = setting("resnet4")[0]
    build = native.deep_build(model, F64)
    lib = native.obtain(build)
    got = native.library_variant(lib, "mfsym_deep_variant")
    assert (got["depth"], got["hidden"], got["d"], got["abi"]) == (4, 0, 4, native.DEEP_ABI)
    [record] = (tmp_path / "cache").glob("mfsym_*.json")
    assert json.loads(record.read_text())["variant"]["depth"] == 4
    with caplog.at_level(logging.INFO, logger="mfsym.engine.native"):
        native.obtain(build)
    assert "built native kernel" not in caplog.text and "not usable" not in caplog.text
    shallow = native.shallow_build(model.unit, F64)
    flags = [*native.FLAGS, *build.macros]
    assert native.cache_key("v", flags, build.sources) != native.cache_key("v", flags)
    assert native.cache_key("v", list(native.FLAGS)) == native.cache_key(
        "v", list(native.FLAGS), shallow.sources)


#: Every activation with the matrix unit; the mlp unit with one smooth and one piecewise
#: activation (the activation code is the one-layer kernels', compiled in every variant by
#: test_kernels.py).
DEEP_VARIANTS = [("matrix", a) for a in ACTIVATIONS] + [("mlp", "tanh"), ("mlp", "relu")]


@pytest.mark.parametrize(("name", "act"), DEEP_VARIANTS)
def test_deep_source_compiles_without_warnings(name, act, tmp_path):
    """-Wall -Wextra -Werror with the loader's flags and macros, with and without OpenMP."""
    cc = native.find_compiler()
    if cc is None:
        pytest.skip("no C compiler on this machine")
    unit = make_unit(name, 3, 3, act, leaky_slope=0.25, hidden=2)
    flags = [f for f in native.FLAGS if f != "-shared"]
    for dtype in (torch.float32, F64):
        macros = native.deep_build(ResNet(unit, 3), dtype).macros
        for omp in (["-fopenmp"], []):
            cmd = [cc, "-Wall", "-Wextra", "-Werror", *flags, *omp, "-c", *macros,
                   str(native.DEEP_SOURCE), "-o", str(tmp_path / "deep.o")]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, f"{' '.join(cmd)}:\n{res.stderr}"
