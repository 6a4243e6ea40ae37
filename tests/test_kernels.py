"""Force kernels: every backend computes the eager reference's numbers.

The reference is the unit's own PyTorch code (itself checked against autograd in
test_units.py); the fused update is checked against its definition
θ − lr·Π_d[F(Pθ) + wd·θ] + σ·Π_n ξ written out here with plain tensor algebra.  Since
that shares the unit's algebra, one step of every scheme (vanilla, DA, DA over the orbit,
FA, EA) is also checked, for eager and native, against autograd of the scheme's loss
written from PAPER.md §2–4 in float64.  Further: the C source compiles without warnings
in every variant, a damaged kernel cache is reported and rebuilt (in child processes, so
that a crash cannot take pytest down), and bad arguments are refused before reaching C.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mfsym.core.units import ACTIVATIONS, make_unit
from mfsym.engine import native, native_build
from mfsym.engine.kernels import (
    BACKENDS,
    EagerKernel,
    NativeKernel,
    Tally,
    UpdateSpec,
    select_kernel,
)

CPU = torch.device("cpu")
F32, F64 = torch.float32, torch.float64
TOL = {F32: dict(rtol=2e-5, atol=2e-5), F64: dict(rtol=1e-12, atol=1e-12)}

#: (unit, dx = dy): the paper's 2×2 matrix unit, a 3×3 one, uv units and mlp units (hidden
#: width dx).
SHAPES = [("matrix", 2), ("matrix", 3), ("uv", 2), ("uv", 3), ("mlp", 2), ("mlp", 3)]


def native_or_skip(unit, dtype):
    try:
        return NativeKernel(unit, dtype)
    except native.NativeUnavailable as exc:  # pragma: no cover - machine without a compiler
        pytest.skip(f"no native kernels here: {exc}")


def inputs(unit, dtype, R=3, N=300, S=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(R, N, unit.dim_z, generator=gen, dtype=dtype)
    x = 2.0 * torch.randn(R, S, unit.dx, generator=gen, dtype=dtype)
    cot = torch.randn(R, S, unit.dy, generator=gen, dtype=dtype)
    return theta, x, cot


def spec_for(unit, dtype, R=3, seeds=2):
    """Mixed stack: run 0 free, run 1 projected model+drift, run 2 projected noise only."""
    D = unit.dim_z
    gen = torch.Generator().manual_seed(5)
    basis = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=F64))[0][:, : max(1, D // 2)]
    P = (basis @ basis.T).to(dtype)
    eye = torch.eye(D, dtype=dtype)
    return UpdateSpec(
        lr=0.3, wd=0.05, sigma=0.2,
        proj=torch.stack([eye, P, eye]), proj_on=torch.tensor([False, True, False]),
        noise_proj=torch.stack([eye, P, P]), noise_on=torch.tensor([False, True, True]),
        noise_row=torch.tensor([1, 0, 1]),
    )


def update_by_definition(unit, theta, x, cot, xi, spec):
    """θ − lr·Π_d[F(θ Pᵀ) + wd θ] + σ Π_n ξ with F the unit's own pull-back."""
    model = torch.einsum("rnd,red->rne", theta, spec.proj)
    force = unit.output_and_pullback(model, x)[1](cot)
    drift = torch.einsum("rnd,rde->rne", force + spec.wd * theta, spec.proj)
    noise = torch.einsum("rnd,rde->rne", xi[spec.noise_row], spec.noise_proj)
    return theta - spec.lr * drift + spec.sigma * noise


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize(("name", "dim"), SHAPES)
def test_native_output_and_pullback_equal_eager_float64(name, dim, act):
    unit = make_unit(name, dim, dim, act)
    kern = native_or_skip(unit, F64)
    theta, x, cot = inputs(unit, F64)
    out0, pull0 = unit.output_and_pullback(theta, x)
    out1, pull1 = kern.output_and_pullback(theta, x)
    torch.testing.assert_close(out1, out0, **TOL[F64])
    torch.testing.assert_close(pull1(cot), pull0(cot), **TOL[F64])


@pytest.mark.parametrize(
    ("name", "dim", "act"), [("matrix", 2, "sigmoid"), ("uv", 3, "tanh"), ("mlp", 2, "tanh")]
)
def test_native_float32_equals_eager_to_float_rounding(name, dim, act):
    unit = make_unit(name, dim, dim, act)
    kern = native_or_skip(unit, F32)
    theta, x, cot = inputs(unit, F32, N=1000)
    out0, pull0 = unit.output_and_pullback(theta, x)
    out1, pull1 = kern.output_and_pullback(theta, x)
    torch.testing.assert_close(out1, out0, **TOL[F32])
    f0 = pull0(cot)
    torch.testing.assert_close(pull1(cot), f0, rtol=1e-5, atol=1e-5 * f0.abs().max().item())


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(
    ("name", "dim", "act"), [("matrix", 2, "sigmoid"), ("uv", 3, "relu"), ("mlp", 2, "tanh")]
)
def test_fused_update_equals_its_definition(name, dim, act, dtype):
    unit = make_unit(name, dim, dim, act)
    theta, x, cot = inputs(unit, dtype)
    xi = torch.randn(2, theta.shape[1], unit.dim_z, dtype=dtype)
    spec = spec_for(unit, dtype)
    expected = update_by_definition(unit, theta, x, cot, xi, spec)
    for kern in (EagerKernel(unit), native_or_skip(unit, dtype)):
        _, ctx = kern.forward(theta, x, spec)
        got = kern.update(ctx, cot, theta, xi, spec)
        torch.testing.assert_close(got, expected, **TOL[dtype])


def new_tally(R, step=0):
    return Tally(torch.zeros(R, dtype=F64), torch.full((R,), -1, dtype=torch.int64), step)


def fa_spec(unit, dtype, m=2, R=3):
    """spec_for plus a cotangent over m views: run 1 FA-like (random L), others residual."""
    spec = spec_for(unit, dtype, R=R)
    md = m * unit.dy
    gen = torch.Generator().manual_seed(9)
    L = torch.eye(md, dtype=dtype).expand(R, md, md).clone()
    L[1] = torch.randn(md, md, generator=gen, dtype=dtype)
    spec.views, spec.c0 = m, 0.7
    spec.cot_l, spec.cot_on = L, torch.tensor([False, True, False])
    return spec


def cotangent_by_definition(out, targets, spec):
    """c_{g,b} = c₀ (Σ_{g'} L[g, g'] out_{g', b} − T_{g,b}) with s = g·B + b."""
    R, S, dy = out.shape
    m = spec.views
    o = out.reshape(R, m, S // m, dy)
    L = spec.cot_l.reshape(R, m, dy, m, dy)
    lo = torch.einsum("rgkhl,rhbl->rgbk", L, o).reshape(R, S, dy)
    mixed = torch.where(spec.cot_on[:, None, None], lo, out)
    return spec.c0 * (mixed - targets)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("name", "dim", "act"), [("matrix", 2, "sigmoid"), ("uv", 3, "tanh")])
def test_fused_step_equals_outputs_cotangent_and_update(name, dim, act, dtype):
    """One call of the native kernel = forward, c₀(L o − T), update, done one by one; the
    loss is ‖L o − T‖² averaged over the m·B views."""
    unit = make_unit(name, dim, dim, act)
    theta, x, _ = inputs(unit, dtype, S=8)
    targets = torch.randn(x.shape[0], x.shape[1], unit.dy, dtype=dtype)
    xi = torch.randn(2, theta.shape[1], unit.dim_z, dtype=dtype)
    spec = fa_spec(unit, dtype)
    model = torch.einsum("rnd,red->rne", theta, spec.proj)
    out = unit.output(model, x)
    cot = cotangent_by_definition(out, targets, spec)
    expected = update_by_definition(unit, theta, x, cot, xi, spec)
    loss = ((cot / spec.c0) ** 2).sum((1, 2)).to(F64) / x.shape[1]
    for kern in (EagerKernel(unit), native_or_skip(unit, dtype)):
        tally = new_tally(3, step=17)
        tally.loss_acc += 1.0
        got = kern.advance(theta, x, targets, xi, spec, tally)
        torch.testing.assert_close(tally.loss_acc, loss + 1.0, **TOL[dtype])
        assert (tally.first_bad == -1).all()
        torch.testing.assert_close(got, expected, **TOL[dtype])


@pytest.mark.parametrize("R", [1, 3, 8])
def test_fused_step_is_the_same_per_run_whatever_the_threads_and_the_stack(R):
    """Runs spread over threads or chunks spread over threads: the same bits per run."""
    unit = make_unit("matrix", 2, 2, "sigmoid")
    kern = native_or_skip(unit, F32)
    theta, x, _ = inputs(unit, F32, R=8, N=3000, S=20, seed=R)
    targets = torch.rand(8, 20, 2)
    xi = torch.randn(3, 3000, 4)
    spec = UpdateSpec(
        lr=0.01, wd=2e-4, sigma=1e-3, proj=None, proj_on=torch.zeros(8, dtype=torch.bool),
        noise_proj=None, noise_on=torch.zeros(8, dtype=torch.bool),
        noise_row=torch.arange(8) % 3, c0=0.1,
    )
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sub = UpdateSpec(**{**spec.__dict__, "noise_row": spec.noise_row[:R], "cache": {}})
            sub.proj_on, sub.noise_on = spec.proj_on[:R], spec.noise_on[:R]
            for args in ((theta[:R], x[:R], targets[:R], xi, sub), (theta, x, targets, xi, spec)):
                tally = new_tally(args[0].shape[0])
                results.append((tally.loss_acc, kern.advance(*args, tally)))
    finally:
        torch.set_num_threads(before)
    for loss, new in results[1:]:
        assert torch.equal(loss[:R], results[0][0][:R])
        assert torch.equal(new[:R], results[0][1][:R])


@pytest.mark.parametrize("backend", ["eager", "native"])
def test_tally_marks_the_first_non_finite_step_of_each_run(backend):
    unit = make_unit("matrix", 2, 2, "sigmoid")
    kern = native_or_skip(unit, F32) if backend == "native" else EagerKernel(unit)
    theta, x, _ = inputs(unit, F32, S=4)
    theta[2, 0, 0] = float("nan")
    targets = torch.zeros(3, 4, 2)
    xi = torch.zeros(2, theta.shape[1], 4)
    spec = spec_for(unit, F32)
    tally = new_tally(3, step=5)
    tally.first_bad[1] = 2  # already marked earlier: kept
    kern.advance(theta, x, targets, xi, spec, tally)
    tally.step = 6
    kern.advance(theta, x, targets, xi, spec, tally)
    assert tally.first_bad.tolist() == [-1, 2, 5]
    assert torch.isfinite(tally.loss_acc[:2]).all() and not torch.isfinite(tally.loss_acc[2])


def test_native_forward_projects_the_model_of_projected_runs():
    unit = make_unit("matrix", 2, 2, "sigmoid")
    theta, x, _ = inputs(unit, F64)
    spec = spec_for(unit, F64)
    model = torch.einsum("rnd,red->rne", theta, spec.proj)
    out = native_or_skip(unit, F64).output(theta, x, spec)
    torch.testing.assert_close(out, unit.output(model, x), **TOL[F64])
    assert not torch.allclose(out[1], unit.output(theta, x)[1])  # run 1 really is projected


def test_native_results_do_not_depend_on_threads_or_on_the_other_runs():
    """Fixed chunking: bit-identical per run with 1 or 2 threads, alone or stacked."""
    unit = make_unit("matrix", 2, 2, "sigmoid")
    kern = native_or_skip(unit, F32)
    theta, x, cot = inputs(unit, F32, R=4, N=5000, S=20)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out, pull = kern.output_and_pullback(theta, x)
            results.append((out, pull(cot)))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    alone_out, alone_pull = kern.output_and_pullback(theta[2:3], x[2:3])
    assert torch.equal(alone_out[0], results[0][0][2])
    assert torch.equal(alone_pull(cot[2:3])[0], results[0][1][2])


def test_native_propagates_nan_to_its_run_only():
    unit = make_unit("matrix", 2, 2, "sigmoid")
    theta, x, cot = inputs(unit, F32)
    theta[1, 7, 2] = float("nan")
    out, pull = native_or_skip(unit, F32).output_and_pullback(theta, x)
    assert torch.isnan(out[1]).any()
    assert torch.isfinite(out[[0, 2]]).all()
    force = pull(cot)
    assert torch.isnan(force[1, 7]).any()
    assert torch.isfinite(force[[0, 2]]).all()


def test_native_saturated_sigmoid_matches_eager():
    """Huge pre-activations (clamped exponent) still give σ ≈ 0 or 1 and σ' ≈ 0."""
    unit = make_unit("matrix", 2, 2, "sigmoid")
    theta, x, cot = inputs(unit, F64)
    theta = 1e4 * theta
    out0, pull0 = unit.output_and_pullback(theta, x)
    out1, pull1 = native_or_skip(unit, F64).output_and_pullback(theta, x)
    torch.testing.assert_close(out1, out0, rtol=0, atol=1e-12)
    torch.testing.assert_close(pull1(cot), pull0(cot), rtol=0, atol=1e-12)


def test_unknown_backend_names_the_allowed_ones():
    unit = make_unit("matrix", 2, 2, "sigmoid")
    with pytest.raises(ValueError, match="unknown backend 'fast'") as err:
        select_kernel(unit, "fast", CPU)
    for name in BACKENDS:
        assert repr(name) in str(err.value)


def test_native_on_a_gpu_device_is_refused():
    unit = make_unit("matrix", 2, 2, "sigmoid")
    with pytest.raises(native.NativeUnavailable, match="CPU only"):
        select_kernel(unit, "native", torch.device("cuda"))


def test_auto_without_a_compiler_falls_back_to_eager_and_says_so(monkeypatch, tmp_path, caplog):
    unit = make_unit("matrix", 2, 2, "leaky_relu", leaky_slope=0.37)  # a kernel never built
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("MFSYM_KERNEL_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="mfsym.engine.kernels"):
        kern = select_kernel(unit, "auto", CPU, F32)
    assert kern.name == "eager"
    assert "native kernels unavailable" in caplog.text
    with pytest.raises(native.NativeUnavailable, match="no-such-compiler"):
        select_kernel(unit, "native", CPU, F32)


def test_auto_on_the_cpu_is_native_when_it_builds():
    unit = make_unit("matrix", 2, 2, "sigmoid")
    native_or_skip(unit, F32)
    assert select_kernel(unit, "auto", CPU, F32).name == "native"


def test_build_macros_fix_the_variant_and_the_leaky_slope():
    macros = native.build_macros(make_unit("uv", 3, 2, "leaky_relu", leaky_slope=0.25), F64)
    assert macros == [
        "-DMFSYM_DOUBLE=1", "-DMFSYM_UNIT=2", "-DMFSYM_ACT=4", "-DMFSYM_DX=3", "-DMFSYM_DY=2",
        "-DMFSYM_SLOPE=0.25",
    ]
    assert "-DMFSYM_DOUBLE=0" in native.build_macros(make_unit("matrix", 2, 2, "tanh"), F32)
    with pytest.raises(native.NativeUnavailable, match="float16"):
        native.build_macros(make_unit("uv", 3, 2, "tanh"), torch.float16)


def test_no_c_source_is_held_in_python_strings():
    """The kernels live in the shipped C files; the loader only picks -D macros."""
    for module in (native, native_build):
        text = Path(module.__file__).read_text()
        assert "{{" not in text and "#include" not in text
    assert native.SOURCE.is_file() and native.SOURCE.suffix == ".c"


def _compiles(cc, args, tmp_path):
    res = subprocess.run(
        [cc, *args, "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=300
    )
    return res.returncode == 0, res.stderr


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("name", ["matrix", "uv", "mlp"])
def test_c_source_compiles_without_warnings_for_every_variant(name, act, tmp_path):
    """-Wall -Wextra -Werror with the loader's flags and macros: optimised with OpenMP in
    both dtypes, and the reduced build without OpenMP (front end only: its warnings are
    about pragmas and unused arguments)."""
    cc = native.find_compiler()
    if cc is None:
        pytest.skip("no C compiler ($CC, cc, gcc or clang) on this machine")
    (tmp_path / "empty.c").write_text("int main(void) { return 0; }\n")
    if not _compiles(cc, ["-fopenmp", "-c", str(tmp_path / "empty.c")], tmp_path)[0]:
        pytest.skip(f"the C compiler {cc} has no OpenMP (-fopenmp)")
    unit = make_unit(name, 3, 2, act, leaky_slope=0.25)
    strict = ["-Wall", "-Wextra", "-Werror"]
    flags = [f for f in native.FLAGS if f != "-shared"]
    builds = [[*flags, "-fopenmp", "-c", *native.build_macros(unit, dt)] for dt in (F32, F64)]
    builds.append([*flags, "-fsyntax-only", *native.build_macros(unit, F64)])
    for args in builds:
        ok, err = _compiles(cc, [*strict, *args, str(native.SOURCE)], tmp_path)
        assert ok, f"{' '.join(args)}:\n{err}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "dim", "act", "dtype"), [("matrix", 2, "sigmoid", F32), ("uv", 3, "tanh", F64)]
)
def test_compiled_backend_equals_eager(name, dim, act, dtype):
    """torch.compile of the fused formulas (C++ here, Triton on a GPU) agrees with eager."""
    unit = make_unit(name, dim, dim, act)
    theta, x, cot = inputs(unit, dtype)
    kern = select_kernel(unit, "compile", CPU, dtype)
    out0, pull0 = unit.output_and_pullback(theta, x)
    out1, pull1 = kern.output_and_pullback(theta, x)
    torch.testing.assert_close(out1, out0, **TOL[dtype])
    f0 = pull0(cot)
    torch.testing.assert_close(pull1(cot), f0, rtol=1e-5, atol=1e-5 * f0.abs().max().item())
    xi = torch.randn(2, theta.shape[1], unit.dim_z, dtype=dtype)
    spec = spec_for(unit, dtype)
    _, ctx = kern.forward(theta, x, spec)
    got = kern.update(ctx, cot, theta, xi, spec)
    expected = update_by_definition(unit, theta, x, cot, xi, spec)
    torch.testing.assert_close(got, expected, **TOL[dtype])
    targets = torch.randn(x.shape[0], x.shape[1], unit.dy, dtype=dtype)
    tallies = [new_tally(3), new_tally(3)]
    steps = [k.advance(theta, x, targets, xi, spec, t) for k, t in zip(
        (kern, EagerKernel(unit)), tallies, strict=True
    )]
    torch.testing.assert_close(steps[0], steps[1], **TOL[dtype])
    torch.testing.assert_close(tallies[0].loss_acc, tallies[1].loss_acc, **TOL[dtype])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["compile", "auto"])
def test_gpu_kernels_equal_eager(backend):
    unit = make_unit("matrix", 2, 2, "sigmoid")
    dev = torch.device("cuda")
    theta, x, cot = (t.to(dev) for t in inputs(unit, F32))
    kern = select_kernel(unit, backend, dev, F32)
    out0, pull0 = unit.output_and_pullback(theta, x)
    out1, pull1 = kern.output_and_pullback(theta, x)
    torch.testing.assert_close(out1, out0, **TOL[F32])
    f0 = pull0(cot)
    torch.testing.assert_close(pull1(cot), f0, rtol=1e-5, atol=1e-5 * f0.abs().max().item())


# ---------------------------------------------------------------------------------------
# the kernel cache: a bad file is reported and rebuilt, never loaded blindly
# ---------------------------------------------------------------------------------------
#: A short training (20 fused steps) with backend "auto", run in a child process so that a
#: crash while loading a library cannot take pytest down; prints the backend it got and
#: the largest difference to the eager kernel relative to the particles' scale.
SHORT_TRAINING = r"""
import json, logging, sys
import torch
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
from mfsym.core.units import make_unit
from mfsym.engine.kernels import EagerKernel, Tally, UpdateSpec, select_kernel
name, dim, act, dtype = sys.argv[1], int(sys.argv[2]), sys.argv[3], getattr(torch, sys.argv[4])
unit = make_unit(name, dim, dim, act)
kern = select_kernel(unit, "auto", torch.device("cpu"), dtype)
gen = torch.Generator().manual_seed(0)
R, N, S, D = 2, 64, 6, unit.dim_z
theta0 = torch.randn(R, N, D, generator=gen, dtype=dtype)
off = torch.zeros(R, dtype=torch.bool)
spec = UpdateSpec(lr=0.05, wd=0.01, sigma=0.01, proj=None, proj_on=off, noise_proj=None,
                  noise_on=off, noise_row=torch.arange(R), c0=2.0 / S)
finals = []
for k in (kern, EagerKernel(unit)):
    g2 = torch.Generator().manual_seed(1)
    theta = theta0.clone()
    tally = Tally(torch.zeros(R, dtype=torch.float64), torch.full((R,), -1, dtype=torch.int64))
    for step in range(20):
        x = 2 * torch.randn(R, S, unit.dx, generator=g2, dtype=dtype)
        y = torch.randn(R, S, unit.dy, generator=g2, dtype=dtype)
        xi = torch.randn(R, N, D, generator=g2, dtype=dtype)
        theta = k.advance(theta, x, y, xi, spec, tally)
    finals.append(theta)
diff = ((finals[0] - finals[1]).abs().max() / finals[1].abs().max()).item()
print(json.dumps({"backend": kern.name, "rel_diff": diff}))
"""

#: (unit, dim, activation, dtype) of the library under test and of "another kernel".
VARIANT_A = ("matrix", "2", "sigmoid", "float64")
VARIANT_B = ("matrix", "3", "tanh", "float32")


def short_training(cache, variant=VARIANT_A, prefix=(), extra_env=None):
    env = {**os.environ, "MFSYM_KERNEL_CACHE": str(cache), **(extra_env or {})}
    cmd = [*prefix, sys.executable, "-c", SHORT_TRAINING, *variant]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, f"child ended with {res.returncode}:\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["rel_diff"] < (1e-9 if variant[3] == "float64" else 1e-4), out  # rounding
    return out, res.stderr


def cache_files(folder):
    """The (library, record) pairs in a cache folder."""
    return [(so, so.with_suffix(".json")) for so in sorted(Path(folder).glob("mfsym_*.so"))]


def record_vouches_for(so, record):
    rec = json.loads(record.read_text())
    return rec["sha256"] == hashlib.sha256(so.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """Freshly built caches of variants A and B (one library and record each)."""
    if native.find_compiler() is None:
        pytest.skip("no C compiler ($CC, cc, gcc or clang) on this machine")
    root = tmp_path_factory.mktemp("golden")
    for label, variant in (("A", VARIANT_A), ("B", VARIANT_B)):
        out, err = short_training(root / label, variant)
        assert out["backend"] == "native" and "WARNING" not in err, err
        assert len(cache_files(root / label)) == 1
    return root


def _garbage(so, rec, other):
    so.write_bytes(os.urandom(so.stat().st_size))


def _truncated(so, rec, other):
    so.write_bytes(so.read_bytes()[: so.stat().st_size // 2])


def _other_library(so, rec, other):
    shutil.copyfile(other[0], so)


def _other_library_and_record(so, rec, other):
    shutil.copyfile(other[0], so)
    shutil.copyfile(other[1], rec)


def _forged_record(so, rec, other):
    """Another kernel whose record claims this variant: only the symbol check is left."""
    shutil.copyfile(other[0], so)
    data = json.loads(rec.read_text())
    data["sha256"] = hashlib.sha256(so.read_bytes()).hexdigest()
    rec.write_text(json.dumps(data))


def _no_record(so, rec, other):
    rec.unlink()


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (_garbage, "SHA-256"), (_truncated, "SHA-256"), (_other_library, "SHA-256"),
        (_other_library_and_record, "record says"), (_forged_record, "compiled for"),
        (_no_record, "missing"),
    ],
)
def test_a_damaged_cached_library_is_reported_and_rebuilt(golden, tmp_path, damage, cause):
    cache = tmp_path / "cache"
    shutil.copytree(golden / "A", cache)
    [(so, rec)] = cache_files(cache)
    damage(so, rec, cache_files(golden / "B")[0])
    out, err = short_training(cache)
    assert out["backend"] == "native"
    assert "WARNING" in err and str(so) in err and cause in err, err
    assert cache_files(cache) == [(so, rec)] and record_vouches_for(so, rec)
    assert so.read_bytes() == cache_files(golden / "A")[0][0].read_bytes()


def test_a_rebuilt_library_is_used_without_complaint_next_time(golden, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(golden / "A", cache)
    _garbage(*cache_files(cache)[0], None)
    assert "WARNING" in short_training(cache)[1]
    out, err = short_training(cache)
    assert out["backend"] == "native" and "WARNING" not in err, err


def read_only_prefix(folder):
    """Command prefix under which ``folder`` is read-only for the child (skip if impossible:
    root ignores permission bits, so it needs a read-only bind mount)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return ()
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a read-only folder")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    prefix = ("unshare", "-m", "sh", "-c", script, str(folder))
    probe = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True)
    if probe.returncode == 0 or (folder / "probe").exists():
        pytest.skip("running as root and cannot mount a read-only folder here")
    return prefix


def test_a_read_only_cache_folder_builds_uncached_and_says_so(tmp_path):
    if native.find_compiler() is None:
        pytest.skip("no C compiler ($CC, cc, gcc or clang) on this machine")
    cache = tmp_path / "ro"
    cache.mkdir()
    out, err = short_training(cache, prefix=read_only_prefix(cache))
    assert out["backend"] == "native"
    assert "WARNING" in err and "cannot be stored" in err and str(cache) in err, err
    assert list(cache.iterdir()) == []


def test_a_cache_path_that_is_a_file_is_reported_and_left_alone(tmp_path):
    if native.find_compiler() is None:
        pytest.skip("no C compiler ($CC, cc, gcc or clang) on this machine")
    cache = tmp_path / "cache"
    cache.write_text("not a folder\n")
    out, err = short_training(cache)
    assert out["backend"] == "native"
    assert "WARNING" in err and f"{cache} is not a folder" in err, err
    assert cache.read_text() == "not a folder\n"


PLANTED = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(getenv("MFSYM_TEST_MARKER"), "w");
    if (f) { fputs("ran\n", f); fclose(f); }
}
"""


def plant(tmp_path, so, rec):
    """Replace the cached library ``so`` by one whose ELF constructor writes the file
    $MFSYM_TEST_MARKER, with a record that vouches for it (hash and variant)."""
    src = tmp_path / "planted.c"
    src.write_text(PLANTED)
    subprocess.run([native.find_compiler(), "-shared", "-fPIC", str(src), "-o", str(so)],
                   check=True, capture_output=True)
    data = json.loads(rec.read_text())
    data["sha256"] = hashlib.sha256(so.read_bytes()).hexdigest()
    rec.write_text(json.dumps(data))


def _open_folder(cache, so, rec):
    cache.chmod(0o1777)  # like /tmp: anyone could have put the library there


def _open_library(cache, so, rec):
    so.chmod(0o666)


def _foreign_owner(cache, so, rec):
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    os.chown(so, 65534, 65534)
    os.chown(rec, 65534, 65534)


@pytest.mark.parametrize(("opening", "cause"), [
    (_open_folder, "is not safe to load libraries from: it is writable by others"),
    (_open_library, "it is writable by others (mode 666)"),
    (_foreign_owner, "it is owned by uid 65534"),
])
def test_a_planted_library_in_a_cache_others_can_write_never_runs(
    golden, tmp_path, opening, cause
):
    """A library whose record vouches for it still runs code when loaded (its constructor
    runs before any variant check): a folder or file that someone else owns or can write
    is never loaded from; the kernel is built in the private cache instead."""
    cache, private, marker = tmp_path / "shared", tmp_path / "home-cache", tmp_path / "ran"
    shutil.copytree(golden / "A", cache)
    [(so, rec)] = cache_files(cache)
    plant(tmp_path, so, rec)
    opening(cache, so, rec)
    out, err = short_training(cache, extra_env={
        "MFSYM_TEST_MARKER": str(marker), "XDG_CACHE_HOME": str(private)})
    assert not marker.exists(), "the planted library was loaded"
    assert out["backend"] == "native"
    assert "WARNING" in err and cause in err, err
    # the plant is left alone; a fresh library was built (and, for a foreign folder,
    # cached privately)
    assert record_vouches_for(so, rec)
    if opening is _open_folder:
        assert len(cache_files(private / "mfsym" / "kernels")) == 1


def test_the_private_cache_folder_is_created_private(tmp_path, monkeypatch):
    monkeypatch.delenv("MFSYM_KERNEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = native_build._cache_folder()
    assert folder == tmp_path / "xdg" / "mfsym" / "kernels"
    assert folder.stat().st_mode & 0o077 == 0 and native.trust_problem(folder) is None


def fake_compiler(tmp_path, body):
    """A shell script standing in for the C compiler; --version passes to the real one."""
    real = native.find_compiler()
    if real is None:
        pytest.skip("no C compiler ($CC, cc, gcc or clang) on this machine")
    script = tmp_path / "fake-cc"
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = --version ]; then exec {real} --version; fi\n{body}\n'
    )
    script.chmod(0o755)
    return str(script), real


def test_a_compiler_that_hangs_times_out_and_auto_falls_back_to_eager(
    monkeypatch, tmp_path, caplog
):
    cc, _ = fake_compiler(tmp_path, "exec sleep 30")
    monkeypatch.setenv("CC", cc)
    monkeypatch.setenv("MFSYM_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native_build, "COMPILE_TIMEOUT_S", 0.5)
    unit = make_unit("uv", 2, 2, "leaky_relu", leaky_slope=0.43)  # never loaded before
    with caplog.at_level(logging.WARNING, logger="mfsym.engine.kernels"):
        assert select_kernel(unit, "auto", CPU, F64).name == "eager"
    assert "timed out after 0.5 s" in caplog.text
    assert not list((tmp_path / "cache").glob("*.so"))


def refusing_compiler(tmp_path, flag):
    """The real compiler, except that it fails whenever ``flag`` is given (call it before
    pointing CC elsewhere)."""
    real = native.find_compiler()
    body = f'for a in "$@"; do [ "$a" = {flag} ] && exit 1; done\nexec {real} "$@"'
    script = Path(fake_compiler(tmp_path, body)[0])
    return str(script.rename(tmp_path / f"cc-without{flag}"))


def test_a_build_without_openmp_never_takes_the_openmp_builds_name(
    monkeypatch, tmp_path, caplog
):
    """A compiler refusing -fopenmp leaves the reduced library under its own key; one that
    only refuses -march=native (same --version) then builds the OpenMP library beside it
    instead of taking, or overwriting, the reduced one."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MFSYM_KERNEL_CACHE", str(cache))
    unit = make_unit("matrix", 2, 2, "relu")
    no_openmp = refusing_compiler(tmp_path, "-fopenmp")
    no_march = refusing_compiler(tmp_path, "-march=native")
    monkeypatch.setenv("CC", no_openmp)
    reduced = native.obtain_library(unit, F64)
    assert native.library_variant(reduced)["openmp"] == 0
    [(so, rec)] = cache_files(cache)
    assert "-fopenmp" not in json.loads(rec.read_text())["flags"]
    monkeypatch.setenv("CC", no_march)
    with caplog.at_level(logging.WARNING, logger="mfsym.engine.native"):
        full = native.obtain_library(unit, F64)
    assert native.library_variant(full)["openmp"] == 1
    assert caplog.text == ""
    assert len(cache_files(cache)) == 2 and record_vouches_for(so, rec)


# ---------------------------------------------------------------------------------------
# the C boundary: bad arguments are refused by name before any pointer reaches C
# ---------------------------------------------------------------------------------------
#: Run in a child process (a missing check may mean a segfault): each case calls a native
#: entry point with one bad argument and prints what it raised, one JSON line per case.
BAD_CALLS = r"""
import json, sys
import torch
from mfsym.core.units import make_unit
from mfsym.engine import native
from mfsym.engine.kernels import NativeKernel, Tally, UpdateSpec
F64 = torch.float64
unit = make_unit("matrix", 2, 2, "sigmoid")
lib, kern = native.load_library(unit, F64), NativeKernel(unit, F64)
R, N, S, D, m = 2, 16, 4, 4, 2
def t(*shape, dtype=F64):
    return torch.randn(*shape).to(dtype)
def ok():
    return dict(theta=t(R, N, D), x=t(R, S, 2), targets=t(R, S, 2), views=m,
                cot_l=t(R, 2 * m, 2 * m), cot_on=torch.zeros(R, dtype=torch.int8), c0=0.5,
                xi=t(3, N, D), xi_row=torch.tensor([0, 2]), proj=t(R, D, D),
                proj_on=torch.ones(R, dtype=torch.int8), noise_proj=t(R, D, D),
                noise_on=torch.zeros(R, dtype=torch.int8), lr=0.1, wd=0.0, sigma=0.1,
                loss_acc=torch.zeros(R, dtype=F64), first_bad=torch.full((R,), -1),
                step=0, work=t(100000), partw=t(100000), threads=1)
def call(method, **bad):
    a = {**ok(), **bad}
    if method == "output":
        return lib.output(a["theta"], a["x"], a["proj"], a["proj_on"], a["threads"])
    if method == "force":
        return lib.force(a["theta"], a["x"], a.get("cot", t(R, S, 2)), a["threads"])
    if method == "step":
        keys = ("theta", "x", "cot", "xi", "xi_row", "proj", "proj_on", "noise_proj",
                "noise_on", "lr", "wd", "sigma", "threads")
        return lib.step(*[a[k] if k != "cot" else a.get("cot", t(R, S, 2)) for k in keys])
    keys = ("theta", "x", "targets", "views", "cot_l", "cot_on", "c0", "xi", "xi_row", "proj",
            "proj_on", "noise_proj", "noise_on", "lr", "wd", "sigma", "loss_acc",
            "first_bad", "step", "work", "partw", "threads")
    return lib.fused(*[a[k] for k in keys])
def spec():
    off = torch.zeros(R, dtype=torch.bool)
    return UpdateSpec(lr=0.1, wd=0.0, sigma=0.1, proj=None, proj_on=off, noise_proj=None,
                      noise_on=off, noise_row=torch.tensor([0, 1]))
def tally():
    return Tally(torch.zeros(R, dtype=F64), torch.full((R,), -1))
def kernel(method, theta=None, x=None, cot=None, targets=None, xi=None):
    theta = t(R, N, D) if theta is None else theta
    x = t(R, S, 2) if x is None else x
    cot = t(R, S, 2) if cot is None else cot
    targets = t(R, S, 2) if targets is None else targets
    xi = t(2, N, D) if xi is None else xi
    if method == "output_and_pullback":
        return kern.output_and_pullback(theta, x)[1](cot)
    if method == "forward":
        return kern.forward(theta, x, spec())
    if method == "update":
        return kern.update((theta, x), cot, theta, xi, spec())
    return kern.advance(theta, x, targets, xi, spec(), tally())
noncontig = t(R, D, N).transpose(1, 2)
meta = torch.empty(R, N, D, device="meta", dtype=F64)
CASES = {
    "output theta D": lambda: call("output", theta=t(R, N, 3)),
    "output theta dtype": lambda: call("output", theta=t(R, N, D, dtype=torch.float32)),
    "output theta 2-D": lambda: call("output", theta=t(N, D)),
    "output theta strided": lambda: call("output", theta=noncontig),
    "output theta device": lambda: call("output", theta=meta),
    "output x runs": lambda: call("output", x=t(R + 1, S, 2)),
    "output x dx": lambda: call("output", x=t(R, S, 3)),
    "output proj shape": lambda: call("output", proj=t(R, 3, 3)),
    "output proj_on dtype": lambda: call("output", proj_on=torch.ones(R, dtype=torch.bool)),
    "force cot dy": lambda: call("force", cot=t(R, S, 3)),
    "force cot samples": lambda: call("force", cot=t(R, S + 1, 2)),
    "force cot dtype": lambda: call("force", cot=t(R, S, 2, dtype=torch.float32)),
    "force cot strided": lambda: call("force", cot=t(R, 2, S).transpose(1, 2)),
    "step xi particles": lambda: call("step", xi=t(3, N + 1, D)),
    "step xi strided": lambda: call("step", xi=t(3, D, N).transpose(1, 2)),
    "step xi_row range": lambda: call("step", xi_row=torch.tensor([0, 3])),
    "step xi_row dtype": lambda: call("step", xi_row=torch.tensor([0, 1], dtype=torch.int32)),
    "step noise_proj shape": lambda: call("step", noise_proj=t(R + 1, D, D)),
    "step threads": lambda: call("step", threads=0),
    "fused targets": lambda: call("fused", targets=t(R, S, 3)),
    "fused cot_l": lambda: call("fused", cot_l=t(R, 2, 2)),
    "fused views": lambda: call("fused", views=3),
    "fused loss_acc dtype": lambda: call("fused", loss_acc=torch.zeros(R, dtype=torch.float32)),
    "fused first_bad runs": lambda: call("fused", first_bad=torch.full((R + 1,), -1)),
    "fused work size": lambda: call("fused", work=t(10)),
    "kernel theta D": lambda: kernel("output_and_pullback", theta=t(R, N, 5)),
    "kernel x runs": lambda: kernel("output_and_pullback", x=t(R + 1, S, 2)),
    "kernel cot dy": lambda: kernel("output_and_pullback", cot=t(R, S, 3)),
    "kernel forward dtype": lambda: kernel("forward", theta=t(R, N, D, dtype=torch.float32)),
    "kernel update cot": lambda: kernel("update", cot=t(R, S + 1, 2)),
    "kernel advance x": lambda: kernel("advance", x=t(R, S, 3)),
    "kernel advance xi": lambda: kernel("advance", xi=t(2, N, D + 1)),
    "kernel advance targets": lambda: kernel("advance", targets=t(R, S - 1, 2)),
}
for name, fn in CASES.items():
    print(json.dumps({"case": name, "started": True}), flush=True)
    try:
        fn()
        got = {"case": name, "raised": None, "message": ""}
    except Exception as exc:
        got = {"case": name, "raised": type(exc).__name__, "message": str(exc)}
    print(json.dumps(got), flush=True)
"""

#: case -> (exception, words the message must contain: the argument and what is wrong).
BAD_CALL_EXPECTED = {
    "output theta D": ("ValueError", ["theta", "(2, 16, 3)", "(R, N, D)"]),
    "output theta dtype": ("TypeError", ["theta", "torch.float32", "torch.float64"]),
    "output theta 2-D": ("ValueError", ["theta", "(R, N, D)", "(16, 4)"]),
    "output theta strided": ("ValueError", ["theta", "not contiguous"]),
    "output theta device": ("ValueError", ["theta", "meta", "CPU"]),
    "output x runs": ("ValueError", ["x", "(3, 4, 2)", "(R, S, dx)"]),
    "output x dx": ("ValueError", ["x", "(2, 4, 3)", "(2, 4, 2)"]),
    "output proj shape": ("ValueError", ["proj", "(2, 3, 3)", "(R, D, D)"]),
    "output proj_on dtype": ("TypeError", ["proj_on", "torch.bool", "torch.int8"]),
    "force cot dy": ("ValueError", ["cot", "(2, 4, 3)", "(R, S, dy)"]),
    "force cot samples": ("ValueError", ["cot", "(2, 5, 2)", "(2, 4, 2)"]),
    "force cot dtype": ("TypeError", ["cot", "torch.float32"]),
    "force cot strided": ("ValueError", ["cot", "not contiguous"]),
    "step xi particles": ("ValueError", ["xi", "(3, 17, 4)", "(n_seeds, N, D)"]),
    "step xi strided": ("ValueError", ["xi", "not contiguous in its last 2 axes"]),
    "step xi_row range": ("ValueError", ["xi_row", "[0, 3]", "0 to 2"]),
    "step xi_row dtype": ("TypeError", ["xi_row", "torch.int32", "torch.int64"]),
    "step noise_proj shape": ("ValueError", ["noise_proj", "(3, 4, 4)"]),
    "step threads": ("ValueError", ["threads", "at least 1", "got 0"]),
    "fused targets": ("ValueError", ["targets", "(2, 4, 3)", "(R, S, dy)"]),
    "fused cot_l": ("ValueError", ["cot_l", "(2, 2, 2)", "(2, 4, 4)"]),
    "fused views": ("ValueError", ["S = 4", "views = 3"]),
    "fused loss_acc dtype": ("TypeError", ["loss_acc", "torch.float32", "torch.float64"]),
    "fused first_bad runs": ("ValueError", ["first_bad", "(3,)", "(R)"]),
    "fused work size": ("ValueError", ["work", "10", "need"]),
    "kernel theta D": ("ValueError", ["theta", "(2, 16, 5)", "(R, N, D)"]),
    "kernel x runs": ("ValueError", ["x", "(3, 4, 2)", "theta"]),
    "kernel cot dy": ("ValueError", ["cot", "(2, 4, 3)", "(..., S, dy)"]),
    "kernel forward dtype": ("TypeError", ["theta", "torch.float32"]),
    "kernel update cot": ("ValueError", ["cot", "(2, 5, 2)"]),
    "kernel advance x": ("ValueError", ["x", "(2, 4, 3)", "(R, S, dx)"]),
    "kernel advance xi": ("ValueError", ["xi", "(2, 16, 5)"]),
    "kernel advance targets": ("ValueError", ["targets", "(2, 3, 2)", "(2, 4, 2)"]),
}


@pytest.fixture(scope="module")
def bad_call_results():
    if native.find_compiler() is None:
        pytest.skip("no C compiler ($CC, cc, gcc or clang) on this machine")
    res = subprocess.run(
        [sys.executable, "-c", BAD_CALLS], capture_output=True, text=True, timeout=600
    )
    lines = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    done = {d["case"]: d for d in lines if "raised" in d}
    started = [d["case"] for d in lines if d.get("started")]
    return res, done, started


@pytest.mark.parametrize("case", sorted(BAD_CALL_EXPECTED))
def test_a_bad_argument_is_refused_by_name_before_it_reaches_c(bad_call_results, case):
    res, done, started = bad_call_results
    if case not in done:
        last = started[-1] if started else "none"
        pytest.fail(f"the child ended with {res.returncode} in case {last!r}:\n{res.stderr}")
    exc, words = BAD_CALL_EXPECTED[case]
    got = done[case]
    assert got["raised"] == exc, got
    for word in words:
        assert word in got["message"], (word, got)


def test_the_bad_call_table_covers_every_case(bad_call_results):
    res, done, _ = bad_call_results
    assert res.returncode == 0, res.stderr
    assert sorted(done) == sorted(BAD_CALL_EXPECTED)


def test_non_contiguous_inputs_give_the_same_step_as_contiguous_ones():
    unit = make_unit("uv", 3, 3, "tanh")
    kern = native_or_skip(unit, F64)
    theta, x, _ = inputs(unit, F64, S=6)
    targets = torch.randn(3, 6, 3, dtype=F64)
    xi = torch.randn(2, theta.shape[1], unit.dim_z, dtype=F64)
    spec = spec_for(unit, F64)
    strided = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (theta, x, targets)]
    assert not any(t.is_contiguous() for t in strided)
    tallies = [new_tally(3), new_tally(3)]
    plain = kern.advance(theta, x, targets, xi, spec, tallies[0])
    other = kern.advance(*strided, xi, spec, tallies[1])
    assert torch.equal(plain, other) and torch.equal(tallies[0].loss_acc, tallies[1].loss_acc)


# ---------------------------------------------------------------------------------------
# one step of each scheme against autograd of the loss of PAPER.md §4 (float64)
# ---------------------------------------------------------------------------------------
SWAP = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
C2 = torch.stack([torch.eye(2, dtype=F64), SWAP])  # the group on X = Y = R²


def sigma_star(unit, theta, x):
    """σ*(x_s, θ_n) (S, N, 2) written from PAPER.md §2: sigmoid(z x) with z the 2×2 matrix
    (row-major), or v·tanh(uᵀx/2) for uv."""
    if unit.name == "matrix":
        return torch.sigmoid(torch.einsum("nkl,sl->snk", theta.reshape(-1, 2, 2), x))
    return torch.tanh(x @ theta[:, :2].T / 2)[:, :, None] * theta[None, :, 2:]


def z_action(unit, g):
    """M_g on Z: g z gᵀ for a matrix z (so g ⊗ g on the row-major vector), (g u, g v)."""
    return torch.kron(g, g) if unit.name == "matrix" else torch.block_diag(g, g)


def scheme_loss(unit, scheme, theta, x, y, g_idx):
    """The scheme's minibatch loss of PAPER.md §4 for one run."""
    p_e = sum(z_action(unit, g) for g in C2) / 2

    def phi(inputs, particles=theta):
        return sigma_star(unit, particles, inputs).mean(1)

    def sq(a, b):
        return ((a - b) ** 2).sum(-1).mean()

    if scheme == "vanilla":
        return sq(phi(x), y)
    if scheme == "EA":
        return sq(phi(x, theta @ p_e.T), y)
    if scheme == "DA":  # one g per sample
        g = C2[g_idx]
        return sq(phi(torch.einsum("bij,bj->bi", g, x)), torch.einsum("bij,bj->bi", g, y))
    if scheme == "DA-orbit":
        return sum(sq(phi(x @ g.T), y @ g.T) for g in C2) / len(C2)
    fa = sum(phi(x @ g.T) @ g for g in C2) / len(C2)  # (1/|G|) Σ g⁻¹ Φ(g x), g⁻¹ = gᵀ
    return sq(fa, y)


def autograd_step(unit, scheme, theta, x, y, g_idx, xi, alpha, tau, beta):
    """θ − (α/N)·N∇_θ[loss + τ(1/N)Σ‖θᵢ‖²] + √(2αβ/N) ξ, drift and noise projected on E^G
    for EA; also the loss."""
    n = theta.shape[0]
    th = theta.clone().requires_grad_(True)
    loss = scheme_loss(unit, scheme, th, x, y, g_idx)
    (grad,) = torch.autograd.grad(loss + tau * (th**2).sum() / n, th)
    drift, noise = n * grad, xi
    if scheme == "EA":
        p_e = sum(z_action(unit, g) for g in C2) / 2
        drift, noise = drift @ p_e, xi @ p_e
    new = theta - alpha / n * drift + math.sqrt(2 * alpha * beta / n) * noise
    return new, loss.item()


def kernel_inputs(unit, schemes, x, y, g_idx, alpha, tau, beta, n):
    """Views, targets and UpdateSpec of a stack of runs with the same views per sample."""
    R, B = x.shape[0], x.shape[1]
    m = 2 if schemes[0] in ("DA-orbit", "FA") else 1
    p_e = sum(z_action(unit, g) for g in C2) / 2
    eye = torch.eye(unit.dim_z, dtype=F64)
    if m == 2:
        views = torch.cat([x @ g.T for g in C2], 1)  # s = g·B + b
        targets = torch.cat([y @ g.T for g in C2], 1)
    else:
        g = torch.where(torch.tensor([s == "DA" for s in schemes])[:, None], g_idx, 0)
        views = torch.einsum("rbij,rbj->rbi", C2[g], x)
        targets = torch.einsum("rbij,rbj->rbi", C2[g], y)
    ea = torch.tensor([s == "EA" for s in schemes])
    projs = torch.stack([p_e if e else eye for e in ea])
    fa = torch.tensor([s == "FA" for s in schemes])
    blocks = torch.einsum("gik,hjk->gihj", C2, C2).reshape(4, 4) / 2  # L_{g,h} = g hᵀ / m
    spec = UpdateSpec(
        lr=alpha / n, wd=2 * tau, sigma=math.sqrt(2 * alpha * beta / n), proj=projs,
        proj_on=ea, noise_proj=projs, noise_on=ea, noise_row=torch.arange(R), views=m,
        c0=2.0 / (m * B), cot_l=blocks.expand(R, 4, 4).contiguous() if fa.any() else None,
        cot_on=fa,
    )
    return views.contiguous(), targets.contiguous(), spec


@pytest.mark.parametrize("backend", ["eager", "native"])
@pytest.mark.parametrize(("name", "act"), [("matrix", "sigmoid"), ("uv", "tanh")])
def test_one_step_of_each_scheme_equals_autograd_of_its_loss(name, act, backend):
    """vanilla, DA (one g per sample), EA | DA over the orbit, FA: the new particles and the
    loss of one step equal autograd of PAPER.md §4's loss, computed independently."""
    unit = make_unit(name, 2, 2, act)
    kern = native_or_skip(unit, F64) if backend == "native" else EagerKernel(unit)
    n, B, alpha, tau, beta = 30, 5, 0.7, 0.01, 1e-3
    gen = torch.Generator().manual_seed(11)
    for schemes in (["vanilla", "DA", "EA"], ["DA-orbit", "FA"]):
        R = len(schemes)
        theta = 0.8 * torch.randn(R, n, unit.dim_z, generator=gen, dtype=F64)
        x = 4.0 * torch.randn(R, B, 2, generator=gen, dtype=F64)
        y = torch.rand(R, B, 2, generator=gen, dtype=F64)
        g_idx = torch.randint(0, 2, (R, B), generator=gen)
        g_idx[:, 0] = 1  # at least one swapped sample per run
        xi = torch.randn(R, n, unit.dim_z, generator=gen, dtype=F64)
        views, targets, spec = kernel_inputs(unit, schemes, x, y, g_idx, alpha, tau, beta, n)
        tally = new_tally(R)
        got = kern.advance(theta, views, targets, xi, spec, tally)
        for r, scheme in enumerate(schemes):
            want, loss = autograd_step(
                unit, scheme, theta[r], x[r], y[r], g_idx[r], xi[r], alpha, tau, beta
            )
            torch.testing.assert_close(got[r], want, rtol=1e-11, atol=1e-12, msg=scheme)
            assert tally.loss_acc[r].item() == pytest.approx(loss, rel=1e-12), scheme
