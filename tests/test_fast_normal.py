"""The native normal-number generator against torch.randn, bit for bit.

torch.randn is the independent computation here: every comparison draws the same
generator state both ways and compares the numbers' bits and the generator's state after.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mfsym.engine import fast_normal
from mfsym.engine.blocks import Streams
from mfsym.engine.fast_normal import (
    LEFT_AT,
    MIN_NUMBERS,
    NEXT_AT,
    WORDS_AT,
    NativeNormal,
    native_normal,
)
from mfsym.engine.native import NativeUnavailable, load_normal_library
from mfsym.engine.training import TrainConfig, train_stack

try:
    load_normal_library()
except NativeUnavailable as exc:  # pragma: no cover - machines without a C compiler
    pytest.skip(f"no native generator: {exc}", allow_module_level=True)

DTYPES = (torch.float32, torch.float64)


def _gen(seed: int, skip: int = 0) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed)
    if skip:
        torch.randint(0, 2**31 - 1, (skip,), generator=gen)
    return gen


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def _chosen(dtype) -> NativeNormal:
    chosen = native_normal(dtype)
    if chosen is None:
        pytest.skip(f"no native variant reproduces torch.randn for {dtype} here")
    return chosen


def test_a_linux_x86_machine_draws_natively_with_the_variant_of_torch_s_path():
    """The check must not quietly turn the generator off where it is known to work (a
    broken variant would make the tests below skip, not fail): on Linux x86-64, float32
    takes the vector variant where torch runs its AVX2 or AVX-512 code and the C library's
    otherwise, float64 the C library's."""
    import platform

    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the expected variants are known for Linux on x86-64")
    capability = torch.backends.cpu.get_cpu_capability()
    f32, f64 = native_normal(torch.float32), native_normal(torch.float64)
    assert f32 is not None and f64 is not None
    assert f32.name == ("vector" if capability in ("AVX2", "AVX512") else "libm")
    assert f64.name == "libm"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed,skip,n", [
    (3, 0, 31), (99, 1, 32), (2**63 + 11, 0, 53), (5, 300, 623), (6, 624, 625),
    (8, 2, 1248), (2**32 + 1, 17, 10007), (11, 611, 131075),
])
def test_native_numbers_and_state_are_torch_randn_bit_for_bit(dtype, seed, skip, n):
    native = _chosen(dtype)
    ours, theirs = _gen(seed, skip), _gen(seed, skip)
    got = torch.empty(n, dtype=dtype)
    native.fill(ours, got)
    want = torch.randn(n, generator=theirs, dtype=dtype)
    assert _bits_equal(got, want)
    assert torch.equal(ours.get_state(), theirs.get_state())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_stream_mixing_native_and_torch_draws_stays_torch_s_stream(dtype):
    """Native fills between torch's own draws (integers, uniforms, short normals) of the
    same generator: every number as if torch had drawn them all."""
    native = _chosen(dtype)
    ours, theirs = _gen(2024), _gen(2024)
    for n in (5000, 16, 40000, 777):
        got = torch.empty(n, dtype=dtype)
        native.fill(ours, got)
        assert _bits_equal(got, torch.randn(n, generator=theirs, dtype=dtype))
        for draw in (lambda g: torch.randint(0, 6, (41,), generator=g),
                     lambda g: torch.rand(13, generator=g, dtype=dtype),
                     lambda g: torch.randn(7, generator=g, dtype=dtype)):
            assert torch.equal(draw(ours), draw(theirs))


def _untemper(y: np.ndarray) -> np.ndarray:
    """The MT19937 word whose tempered output is ``y`` (the inverse of the tempering)."""
    y = y.astype(np.uint64)
    y ^= y >> np.uint64(18)
    y ^= (y << np.uint64(15)) & np.uint64(0xEFC60000)
    t = y.copy()
    for _ in range(4):
        t = y ^ ((t << np.uint64(7)) & np.uint64(0x9D2C5680))
    y = t & np.uint64(0xFFFFFFFF)
    t = y.copy()
    for _ in range(3):
        t = y ^ (t >> np.uint64(11))
    return t & np.uint64(0xFFFFFFFF)


def test_a_crafted_state_makes_torch_draw_the_chosen_uniforms():
    """The set-up of the exhaustive test below: words untempered from chosen outputs make
    torch's own uniforms (low 24 bits of each output, times 2⁻²⁴) the chosen ones."""
    k = np.random.default_rng(3).integers(0, 1 << 24, 600, dtype=np.uint64)
    state = _gen(0).get_state().numpy().copy()
    state[LEFT_AT:LEFT_AT + 4] = np.array([624], np.int32).view(np.uint8)
    state[NEXT_AT:NEXT_AT + 8] = np.array([0], np.int64).view(np.uint8)
    words = np.zeros(624, np.uint64)
    words[:600] = _untemper(k | (np.uint64(0xAB) << np.uint64(24)))
    state[WORDS_AT:WORDS_AT + 624 * 8] = words.view(np.uint8)
    gen = torch.Generator()
    gen.set_state(torch.from_numpy(state))
    u = torch.rand(600, generator=gen, dtype=torch.float32).numpy()
    assert np.array_equal(u, k.astype(np.float32) * np.float32(2.0**-24))


def test_every_float32_uniform_in_both_places_of_a_pair_gives_torch_randn_bits():
    """All 2²⁴ float32 uniforms u, in the log place (1 − u) and in the angle place (2πu)
    of a Box–Muller pair: generator states are set up so that a draw of 608 numbers reads
    chosen uniforms (its words untempered), then drawn both ways.  The angle place takes
    u' = (40503·k + 12345)·2⁻²⁴ mod 1 beside u = k·2⁻²⁴, a permutation, so u = 0 (radius
    −0) meets an angle in the first quadrant: r cos θ = −0, which torch writes as +0."""
    native = _chosen(torch.float32)
    K, per = 1 << 24, 304
    blocks = np.arange(38)
    first = (blocks[:, None] * 16 + np.arange(8)[None]).ravel()
    template = _gen(0).get_state().numpy().copy()
    template[LEFT_AT:LEFT_AT + 4] = np.array([624], np.int32).view(np.uint8)
    template[NEXT_AT:NEXT_AT + 8] = np.array([0], np.int64).view(np.uint8)
    high = np.random.default_rng(1).integers(0, 256, 624, dtype=np.uint64) << np.uint64(24)
    ours, theirs = torch.Generator(), torch.Generator()
    got = torch.empty(608)
    mismatches = 0
    for c in range((K + per - 1) // per):
        k = (np.arange(c * per, (c + 1) * per, dtype=np.uint64)) % np.uint64(K)
        u = np.zeros(624, np.uint64)
        u[first] = k
        u[first + 8] = (k * np.uint64(40503) + np.uint64(12345)) % np.uint64(K)
        state = template.copy()
        state[WORDS_AT:WORDS_AT + 624 * 8] = _untemper(u | high).view(np.uint8)
        ours.set_state(torch.from_numpy(state))
        theirs.set_state(torch.from_numpy(state.copy()))
        native.fill(ours, got)
        want = torch.randn(608, generator=theirs)
        mismatches += int((got.view(torch.int32) != want.view(torch.int32)).sum())
    assert mismatches == 0


def test_each_cpu_path_of_torch_gets_its_own_variant():
    """torch without vector capability (ATEN_CPU_CAPABILITY=default) evaluates log, cos
    and sin per number in the C library: a fresh process there picks the variant that
    gives its bits, which differ from the vector path's where this process uses that."""
    here = native_normal(torch.float32)
    code = textwrap.dedent("""
        import torch
        from mfsym.engine.fast_normal import native_normal
        chosen = native_normal(torch.float32)
        g1, g2 = torch.Generator(), torch.Generator()
        g1.manual_seed(9); g2.manual_seed(9)
        out = torch.empty(4099)
        if chosen is not None:
            chosen.fill(g1, out)
            assert torch.equal(out, torch.randn(4099, generator=g2))
        print(torch.backends.cpu.get_cpu_capability(), chosen and chosen.name)
    """)
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    capability, name = res.stdout.split()
    assert capability == "DEFAULT"
    assert name == "libm"
    if here is not None and here.name == "vector":  # the two paths differ here
        assert not torch.equal(torch.randn(4099, generator=_gen(9)), _default_draw(9, 4099))


def _default_draw(seed, n):
    code = (f"import torch; g = torch.Generator(); g.manual_seed({seed}); "
            f"import sys; sys.stdout.buffer.write(torch.randn({n}, generator=g).numpy()"
            ".tobytes())")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env,
                         timeout=300, check=True).stdout
    return torch.from_numpy(np.frombuffer(out, dtype=np.float32).copy())


def test_a_variant_that_does_not_give_torch_s_bits_is_not_used(monkeypatch, caplog):
    here = native_normal(torch.float32)
    if here is None or here.name != "vector":
        pytest.skip("needs a torch that draws float32 through its vector path")
    monkeypatch.setattr(fast_normal, "VARIANTS", {torch.float32: (0,)})
    monkeypatch.setattr(fast_normal, "_CHOSEN", {})
    with caplog.at_level(logging.INFO, logger="mfsym.engine.fast_normal"):
        assert native_normal(torch.float32) is None
    assert "no native variant (libm) gives its bits" in caplog.text
    streams = Streams([1], 1000, TrainConfig(), _group(), torch.device("cpu"), torch.float32)
    assert streams.native is None


def _unit():
    from mfsym.core.units import make_unit
    return make_unit("matrix", 2, 2, "sigmoid")


def _group():
    from mfsym.core.groups import c2_swap
    return _unit().group(c2_swap())


def test_a_vector_variant_without_fused_multiply_adds_is_not_used(monkeypatch, caplog):
    """Built without FMA instructions the vector variant is exact but slower than torch:
    it is skipped, and where torch draws through its vector path nothing else agrees."""
    here = native_normal(torch.float32)
    if here is None or here.name != "vector":
        pytest.skip("needs a torch that draws float32 through its vector path")
    assert fast_normal.vector_fma(load_normal_library())  # -march=native on x86-64
    monkeypatch.setattr(fast_normal, "vector_fma", lambda lib: False)
    monkeypatch.setattr(fast_normal, "_CHOSEN", {})
    with caplog.at_level(logging.INFO, logger="mfsym.engine.fast_normal"):
        assert native_normal(torch.float32) is None
    assert "built without fused multiply-add instructions" in caplog.text


class _FakeGenerator:
    device = torch.device("cpu")

    def __init__(self, state):
        self.state = state

    def get_state(self):
        return self.state

    def set_state(self, state):  # pragma: no cover - never reached on a refused state
        raise AssertionError("a refused state must not be written back")


@pytest.mark.parametrize("field,value", [("left", 0), ("left", 625), ("next", 700),
                                         ("word", 2**32)])
def test_a_state_torch_s_generator_cannot_be_in_is_refused(field, value):
    native = NativeNormal(load_normal_library(), torch.float32, 0)
    state = _gen(1, skip=10).get_state().clone()
    arr = state.numpy()
    if field == "left":
        arr[LEFT_AT:LEFT_AT + 4] = np.array([value], np.int32).view(np.uint8)
    elif field == "next":
        arr[NEXT_AT:NEXT_AT + 8] = np.array([value], np.int64).view(np.uint8)
    else:
        arr[WORDS_AT + 8 * 5:WORDS_AT + 8 * 6] = np.array([value], np.uint64).view(np.uint8)
    out = torch.full((64,), 7.0)
    with pytest.raises(ValueError, match="not one torch's MT19937 can be in"):
        native.fill(_FakeGenerator(state), out)
    assert torch.equal(out, torch.full((64,), 7.0))  # nothing written


def test_bad_requests_name_what_is_allowed():
    native = NativeNormal(load_normal_library(), torch.float32, 0)
    gen = _gen(1)
    with pytest.raises(ValueError, match="allowed: 16 or more"):
        native.fill(gen, torch.empty(15))
    with pytest.raises(ValueError, match="allowed: contiguous torch.float32 on cpu"):
        native.fill(gen, torch.empty(64, 2)[:, 0])
    with pytest.raises(ValueError, match="allowed: contiguous torch.float32 on cpu"):
        native.fill(gen, torch.empty(64, dtype=torch.float64))
    with pytest.raises(ValueError, match="no native normal variant 1"):
        NativeNormal(load_normal_library(), torch.float64, 1)
    with pytest.raises(ValueError, match=r"normal_draws = 'fast'; allowed: \['auto', 'torch'\]"):
        _train_one(normal_draws="fast")


@pytest.mark.parametrize(("dtype", "draw_dtype", "runs"), [
    ("float32", None, 1), ("float32", None, 3), ("float64", None, 1),
    ("float32", "float64", 1),
])
def test_training_with_native_draws_trains_torch_s_bits(dtype, draw_dtype, runs):
    from mfsym.core.teachers import paper_teachers
    from mfsym.engine.training import RunSpec

    group = _group()
    unit = _unit()
    specs = [RunSpec("WI", "vanilla", 0), RunSpec("SI", "EA", 1),
             RunSpec("arbitrary", "DA", 0)][:runs]
    cfg = TrainConfig(T=96 / 64, n_eval=64, n_snapshots=3, dtype=dtype, backend="native")
    res = {how: train_stack(group, unit, paper_teachers(group), specs, 64, "SI", cfg,
                            draw_dtype=draw_dtype, normal_draws=how)
           for how in ("auto", "torch")}
    for name in ("final_particles", "population_risk", "train_loss", "rmd_projected"):
        np.testing.assert_array_equal(getattr(res["auto"], name), getattr(res["torch"], name),
                                      err_msg=name)


def _train_one(**kw):
    from mfsym.core.teachers import paper_teachers
    from mfsym.engine.training import RunSpec

    group = _group()
    return train_stack(group, _unit(), paper_teachers(group), [RunSpec("WI", "vanilla", 0)],
                       10, "SI", TrainConfig(T=1.0), **kw)


def test_small_blocks_are_left_to_torch(monkeypatch):
    streams = Streams([1], 10, TrainConfig(), _group(), torch.device("cpu"), torch.float32)
    if streams.native is None:
        pytest.skip("no native generator here")
    calls = []
    monkeypatch.setattr(streams.native, "fill", lambda gen, out: calls.append(out.numel()))
    streams.next_chunk(4)  # x: 4·20·2 and ξ: 4·10·4 numbers, both below MIN_NUMBERS
    assert calls == []
    big = Streams([1], 1000, TrainConfig(), _group(), torch.device("cpu"), torch.float32)
    monkeypatch.setattr(big.native, "fill", lambda gen, out: calls.append(out.numel()))
    big.next_chunk(4)
    assert calls == [4 * 1000 * 4] and calls[0] >= MIN_NUMBERS


def test_a_strided_block_is_drawn_by_torch():
    """torch.randn into a strided tensor takes another path (other numbers than into a
    contiguous one), so Streams leaves such a block to torch: the same numbers as before."""
    streams = Streams([1], 1000, TrainConfig(), _group(), torch.device("cpu"), torch.float32)
    got, want = torch.empty(8192, 2)[:, 0], torch.empty(8192, 2)[:, 0]
    ours, theirs = _gen(4), _gen(4)
    streams._normal(ours, got)
    torch.randn(want.shape, generator=theirs, out=want)
    assert _bits_equal(got.contiguous(), want.contiguous())
    assert torch.equal(ours.get_state(), theirs.get_state())


@pytest.mark.parametrize("n", [10, 1000])  # ξ below and above the native generator's size
def test_chunks_drawn_into_one_buffer_are_the_chunks_drawn_one_by_one(n):
    """next_chunk(24, chunk=8) lays three chunks of 8 steps end to end: each seed's x, g
    and ξ equal those of three calls of 8 steps (drawn x, g, ξ per chunk, not per call)."""
    cfg, group, cpu = TrainConfig(), _group(), torch.device("cpu")
    one = Streams([1, 2], n, cfg, group, cpu, torch.float32)
    by_chunk = Streams([1, 2], n, cfg, group, cpu, torch.float32)
    whole = [t.clone() for t in one.next_chunk(24, 0, chunk=8)]
    parts = [[t.clone() for t in by_chunk.next_chunk(8, 1)] for _ in range(3)]
    for i, t in enumerate(whole):
        assert torch.equal(t, torch.cat([p[i] for p in parts], dim=1))
    plain = Streams([1, 2], n, cfg, group, cpu, torch.float32).next_chunk(24)
    assert not torch.equal(plain[2], whole[2])  # one chunk of 24 steps draws other numbers
    with pytest.raises(ValueError, match="chunk = 5 steps must divide size = 24"):
        one.next_chunk(24, 0, chunk=5)
