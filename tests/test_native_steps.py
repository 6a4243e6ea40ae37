"""The step kernel (``mfsym_steps``): K steps in one call, its own threads, explicit vectors.

Checked against (i) K single-step calls of itself, bit for bit (the call's buffers, step
offsets and noise rows), (ii) the first kernel ``mfsym_fused`` (backend ``native-v1``,
scalar 8-lane code), to float64 rounding (only the order of the sums over particles
differs), (iii) itself with other thread counts and other runs in the call, bit for bit,
and (iv) the divergence bookkeeping of a step inside a call.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_kernels import F32, F64, fa_spec, native_or_skip, new_tally

from mfsym.core.units import make_unit
from mfsym.engine.kernels import NativeKernel, NativeV1Kernel

# (name, dim, activation); "mlp" is the tanh mlp unit of hidden width 3 (D = 12)
UNITS = [("matrix", 2, "sigmoid"), ("uv", 3, "tanh"), ("matrix", 3, "leaky_relu"),
         ("mlp", 2, "tanh")]


def unit_of(name, dim, act):
    return make_unit(name, dim, dim, act, **({"hidden": 3} if name == "mlp" else {}))


def chunk_inputs(unit, dtype, R=3, N=700, K=6, m=2, B=5, seed=0):
    """θ (R, N, D), views (K, R, m·B, dx), targets (K, R, m·B, dy), ξ (2, K, N, D)."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(R, N, unit.dim_z, generator=gen, dtype=dtype)
    x = 1.5 * torch.randn(K, R, m * B, unit.dx, generator=gen, dtype=dtype)
    y = torch.randn(K, R, m * B, unit.dy, generator=gen, dtype=dtype)
    xi = torch.randn(2, K, N, unit.dim_z, generator=gen, dtype=dtype)
    return theta, x, y, xi


def with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(("name", "dim", "act"), UNITS)
def test_k_steps_in_one_call_equal_k_calls_of_one_step(name, dim, act, dtype, threads):
    """Projected model, drift and noise, an FA cotangent over 2 views, noise rows shared
    by runs: one call of K = 6 steps gives the bits of six calls, and the same losses."""
    unit = unit_of(name, dim, act)
    kern = native_or_skip(unit, dtype)
    theta, x, y, xi = chunk_inputs(unit, dtype)
    spec = fa_spec(unit, dtype)

    def run():
        many = new_tally(3)
        got = kern.advance_many(theta, x, y, xi, spec, many, 40)
        one, th = new_tally(3, step=40), theta
        for k in range(x.shape[0]):
            one.step = 40 + k
            th = kern.advance(th, x[k], y[k], xi[:, k], spec, one)
        return got, th, many, one

    got, th, many, one = with_threads(threads, run)
    assert torch.equal(got, th)
    assert torch.equal(many.loss_acc, one.loss_acc)
    assert torch.equal(many.first_bad, one.first_bad)
    assert not torch.equal(got, theta)


@pytest.mark.parametrize(("name", "dim", "act"), UNITS)
def test_the_step_kernel_equals_the_first_kernel_in_float64(name, dim, act):
    """Two implementations (vectors of particles, K steps per call; 8-lane scalar code,
    one call per step) agree to float64 rounding over 6 steps of a mixed stack."""
    unit = unit_of(name, dim, act)
    native_or_skip(unit, F64)
    theta, x, y, xi = chunk_inputs(unit, F64, seed=3)
    spec = fa_spec(unit, F64)
    results = []
    for kind in (NativeKernel, NativeV1Kernel):
        tally = new_tally(3)
        results.append((kind(unit, F64).advance_many(theta, x, y, xi, spec, tally, 0), tally))
    (a, ta), (b, tb) = results
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ta.loss_acc, tb.loss_acc, rtol=1e-12, atol=0)
    assert (a - theta).abs().max() > 1e-3  # the steps moved the particles


@pytest.mark.parametrize("dtype", [F32, F64])
def test_a_run_is_the_same_whatever_the_threads_and_the_other_runs(dtype):
    """Run 0 alone (chunks shared by threads) and in stacks of 3 and 8 (chunks, or whole
    runs, shared by threads), with 1 to 4 threads: the same bits."""
    unit = make_unit("matrix", 2, 2, "sigmoid")
    kern = native_or_skip(unit, dtype)
    theta, x, y, xi = chunk_inputs(unit, dtype, R=8, N=1500, K=4, m=1, B=20, seed=5)
    spec = fa_spec(unit, dtype, m=1, R=8)
    spec.cot_l, spec.cot_on = None, None
    spec.proj_on = torch.zeros(8, dtype=torch.bool)
    spec.noise_on = torch.tensor([True, False] * 4)
    spec.proj = None
    spec.noise_proj = torch.eye(4, dtype=dtype).expand(8, 4, 4).contiguous() * 0.5
    spec.noise_row = torch.arange(8) % 2
    outcomes = []
    for R in (1, 3, 8):
        sub = type(spec)(**{**spec.__dict__, "cache": {}})
        sub.proj_on, sub.noise_on = spec.proj_on[:R], spec.noise_on[:R]
        sub.noise_proj, sub.noise_row = spec.noise_proj[:R], spec.noise_row[:R]
        for threads in (1, 2, 3, 4):
            tally = new_tally(R)
            new = with_threads(threads, lambda R=R, sub=sub, tally=tally: kern.advance_many(
                theta[:R], x[:, :R], y[:, :R], xi, sub, tally, 0))
            outcomes.append((R, threads, new[0], tally.loss_acc[0]))
    _, _, ref, ref_loss = outcomes[0]
    for R, threads, new, loss in outcomes[1:]:
        assert torch.equal(new, ref), (R, threads)
        assert torch.equal(loss, ref_loss), (R, threads)


def test_a_step_that_goes_bad_inside_a_call_is_marked_for_its_run_only():
    """A NaN target at step 3 of run 1 (of 3): first_bad = step0 + 3 for run 1 alone,
    whose loss is NaN; the other runs' numbers are those of the clean call."""
    unit = make_unit("matrix", 2, 2, "sigmoid")
    kern = native_or_skip(unit, F32)
    theta, x, y, xi = chunk_inputs(unit, F32, K=6, m=1, B=10)
    spec = fa_spec(unit, F32, m=1)
    spec.cot_l, spec.cot_on = None, None
    bad = y.clone()
    bad[3, 1, 0, 0] = math.nan
    clean, dirty = new_tally(3), new_tally(3)
    a = kern.advance_many(theta, x, y, xi, spec, clean, 100)
    b = kern.advance_many(theta, x, bad, xi, spec, dirty, 100)
    assert dirty.first_bad.tolist() == [-1, 103, -1]
    assert torch.isnan(dirty.loss_acc[1]) and not torch.isnan(dirty.loss_acc[[0, 2]]).any()
    assert torch.equal(a[[0, 2]], b[[0, 2]])
    assert torch.isnan(b[1]).all()


def test_the_floor_is_measured_on_this_cpu():
    """Per-lane ns of an FMA, the exponential and the reciprocal: positive and finite; an
    exponential (a polynomial of degree 7 and a reduction) costs more than one FMA."""
    kern = native_or_skip(make_unit("matrix", 2, 2, "sigmoid"), F32)
    for threads in (1, 2):
        got = kern.lib.floor(200, threads)
        assert set(got) == {"fma", "exp", "reciprocal"}
        assert all(0 < v < 1e3 and math.isfinite(v) for v in got.values()), got
        assert got["exp"] > got["fma"], got
    with pytest.raises(ValueError, match="threads must be at least 1"):
        kern.lib.floor(200, 0)


def _mixed_inputs(dtype, copies=1):
    """The unit and ``copies`` times the mixed stack of 3 runs at N = 2000, 4 steps (2
    copies: 6 runs, which two threads share as whole runs; 1: (run, chunk) items)."""
    unit = make_unit("matrix", 2, 2, "sigmoid")
    native_or_skip(unit, dtype)
    R = 3 * copies
    theta, x, y, xi = chunk_inputs(unit, dtype, R=R, N=2000, K=4, m=2, B=10, seed=9)
    spec = fa_spec(unit, dtype)
    for name in ("proj", "proj_on", "noise_proj", "noise_on", "noise_row", "cot_l", "cot_on"):
        value = getattr(spec, name)
        setattr(spec, name, value.repeat(copies, *[1] * (value.dim() - 1)))
    return unit, theta, x, y, xi, spec


def _advance(inputs):
    """One call on torch's thread count, by a kernel object of its own (one object keeps
    one workspace, so it serves one thread): θ after it and the losses."""
    unit, theta, x, y, xi, spec = inputs
    kern = native_or_skip(unit, theta.dtype)
    tally = new_tally(theta.shape[0])
    new = kern.advance_many(theta, x, y, xi, spec, tally, 0)
    return new, tally.loss_acc.clone()


def test_calls_from_several_threads_at_once_give_the_bits_of_one_call():
    """The kernel keeps one team of worker threads; a call made while another thread's
    call holds it runs on its calling thread alone.  Calls of two threads each from four
    Python threads at once (64 calls), sharing (run, chunk) items or whole runs, give the bits of a
    lone call."""
    from concurrent.futures import ThreadPoolExecutor

    for copies in (1, 2):
        inputs = _mixed_inputs(F32, copies)

        def calls(inputs=inputs):
            ref = _advance(inputs)
            with ThreadPoolExecutor(max_workers=4) as pool:
                return ref, list(pool.map(lambda _: _advance(inputs), range(64)))

        (ref, ref_loss), got = with_threads(2, calls)
        for new, loss in got:
            assert torch.equal(new, ref), copies
            assert torch.equal(loss, ref_loss), copies


def _child_call(conn, inputs):  # pragma: no cover - runs in a forked child
    new, loss = _advance(inputs)
    conn.send((new.numpy().tobytes(), loss.numpy().tobytes()))
    conn.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_a_forked_child_runs_the_kernel_after_its_parent_did():
    """After fork() the child has none of the parent's worker threads: its first call
    with two threads starts a team of its own (instead of waiting for a worker that does
    not exist) and gives the parent's bits.  (The child makes no other torch call that
    could use torch's own thread pool, which is not fork-safe.)"""
    import multiprocessing as mp

    inputs = _mixed_inputs(F32)
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()

    def fork_after_a_call():
        ref = _advance(inputs)  # the parent's team exists now
        proc = ctx.Process(target=_child_call, args=(child, inputs))
        proc.start()
        return ref, proc

    (ref, ref_loss), proc = with_threads(2, fork_after_a_call)
    ready = parent.poll(120)
    proc.join(5 if ready else 0)
    if proc.is_alive():
        proc.kill()
    assert ready, "the forked child's kernel call did not return within 120 s"
    data, loss = parent.recv()
    assert data == ref.numpy().tobytes()
    assert loss == ref_loss.numpy().tobytes()


def gate_case(dtype):
    unit = make_unit("matrix", 2, 2, "sigmoid")
    kern = native_or_skip(unit, dtype)
    theta, x, y, xi = chunk_inputs(unit, dtype, R=3, N=3000, K=40, m=1, B=20, seed=7)
    spec = fa_spec(unit, dtype, m=1)
    return kern, theta, x, y, xi, spec


def check_gate(kern, theta, x, y, xi, spec, opens):
    """Two threads, the second waiting at a gate that another thread opens during the
    call, that is open before it, or that never opens (the call then finishes alone and
    releases the waiting thread): the bits and losses of the same call without a gate."""
    import threading

    R = theta.shape[0]
    plain_tally = new_tally(R)
    plain = with_threads(2, lambda: kern.advance_many(theta, x, y, xi, spec, plain_tally, 0))
    gate = kern.gate(1)
    if opens != "before the call":
        gate.close()
    opener = threading.Timer(0.002, gate.open) if opens == "during the call" else None
    tally = new_tally(R)
    done = []

    def call():
        done.append(with_threads(2, lambda: kern.advance_many(theta, x, y, xi, spec, tally, 0,
                                                              gate=gate)))

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    if opener is not None:
        opener.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the call hung at its gate"
    if opener is not None:
        opener.join()
    assert torch.equal(done[0], plain)
    assert torch.equal(tally.loss_acc, plain_tally.loss_acc)
    assert not torch.equal(plain, theta)  # it trained
    if opens == "never":
        assert gate.joined == 0  # the second thread never took work


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("opens", ["never", "during the call", "before the call"])
def test_threads_at_a_gate_join_when_it_opens_and_the_bits_stay(dtype, opens):
    """``mfsym_steps_gated`` (see :func:`check_gate`)."""
    check_gate(*gate_case(dtype), opens)


def test_a_gate_is_checked():
    kern, theta, x, y, xi, spec = gate_case(F32)
    with pytest.raises(ValueError, match="first must be at least 1"):
        kern.gate(0)
    other = native_or_skip(make_unit("matrix", 2, 2, "sigmoid"), F64)
    with pytest.raises(ValueError, match="gate belongs to another library"):
        kern.advance_many(theta, x, y, xi, spec, new_tally(3), 0, gate=other.gate(1))
    with pytest.raises(ValueError, match="backend native-v1 takes no gate"):
        NativeV1Kernel(kern.unit, F32).advance_many(theta, x, y, xi, spec, new_tally(3), 0,
                                                    gate=kern.gate(1))
