"""Drawing ahead: the next chunk's samples, noise, targets and views prepared on a thread
of their own while the kernel trains the current one.  The numbers must be those drawn in
turn (same generators, same order), a checkpoint written meanwhile must resume to the same
result, and an error on that thread must reach the caller.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch
from conftest import make_setting

from mfsym.core.groups import c2_swap
from mfsym.core.teachers import paper_teachers
from mfsym.engine import chunk_feed
from mfsym.engine.blocks import Block
from mfsym.engine.training import RunSpec, TrainConfig, _Engine, train_stack

RECORDS = ("final_particles", "population_risk", "train_loss", "rmd_projected", "dist_fixed")
MIXED = [RunSpec("arbitrary", "vanilla", 0), RunSpec("WI", "FA", 1), RunSpec("SI", "EA", 0),
         RunSpec("WI", "DA", 1)]


@pytest.fixture(scope="module")
def paper():
    s = make_setting(c2_swap(), "matrix", "sigmoid")
    return s, paper_teachers(s.group)


@pytest.fixture
def torch_threads():
    """Restore torch's thread count after a test that sets it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def train(paper, runs, cfg, **kw):
    s, teachers = paper
    return train_stack(s.group, s.unit, teachers, runs, 16, "SI", cfg, **kw)


def same(a, b):
    for name in RECORDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# a last chunk shorter than the others (T·N = 180 steps, chunks of 32 and 8)
@pytest.mark.parametrize(("backend", "dtype", "chunk"), [
    ("native", "float32", 32), ("native", "float64", 8), ("eager", "float32", 32),
])
@pytest.mark.parametrize("runs", [MIXED[:1], MIXED], ids=["one run", "stack"])
def test_drawing_ahead_trains_the_same_bits(paper, runs, backend, dtype, chunk):
    cfg = TrainConfig(T=180 / 16, n_eval=64, n_snapshots=5, rng_chunk=chunk, check_every=24,
                      backend=backend, dtype=dtype)
    ahead = train(paper, runs, cfg, draw_ahead=True)
    in_turn = train(paper, runs, cfg, draw_ahead=False)
    same(ahead, in_turn)


@pytest.mark.parametrize("ahead", [True, False], ids=["ahead", "in turn"])
@pytest.mark.parametrize(("backend", "dtype"), [("native", "float32"), ("eager", "float64")])
def test_several_chunks_per_kernel_call_train_the_bits_of_one(paper, tmp_path, ahead,
                                                               backend, dtype):
    """1, 3 and 8 chunks of 8 steps per call (drawn one after the other into one buffer):
    the same bits, over 180 steps that end in a short chunk, divergence checks every 24
    steps and checkpoints every 40 (where a call must end), for a stack with both blocks
    (one view and the orbit's two)."""
    cfg = TrainConfig(T=180 / 16, n_eval=64, n_snapshots=5, rng_chunk=8, check_every=24,
                      checkpoint_every=40, backend=backend, dtype=dtype)
    results, calls = {}, {}
    original = Block.steps

    def count(self, prepared, j0, j1, xi_all, step0, gate=None):
        calls[chunks] += 1
        return original(self, prepared, j0, j1, xi_all, step0, gate)

    for chunks in (1, 3, 8):
        calls[chunks] = 0
        with pytest.MonkeyPatch.context() as m:
            m.setattr(chunk_feed, "MAX_CHUNKS", chunks)
            m.setattr(Block, "steps", count)
            results[chunks] = train(paper, MIXED, cfg, draw_ahead=ahead,
                                    checkpoint_path=tmp_path / f"c{chunks}.ckpt.npz")
    for chunks in (3, 8):
        same(results[chunks], results[1])
    # the calls end at checks, snapshots and checkpoints; 8 steps per call make more
    assert calls[1] > calls[3] > calls[8]


class Interrupt(Exception):
    pass


def test_a_checkpoint_written_while_drawing_ahead_resumes_to_the_same_result(paper, tmp_path):
    """Interrupted at step 70 (checkpoints every 16 steps, chunks of 8), resumed with and
    without drawing ahead: both equal the uninterrupted run.  The checkpoint at step 64
    is written while the chunk of steps 64..71 is already drawn; it must hold the
    streams' state from before that chunk."""
    cfg = TrainConfig(T=120 / 12, rng_chunk=8, checkpoint_every=16, n_eval=64, n_snapshots=6)
    s, teachers = paper
    runs = MIXED[:2]
    whole = train_stack(s.group, s.unit, teachers, runs, 12, "SI", cfg, draw_ahead=False)
    original = Block.steps

    def stop(self, prepared, j0, j1, xi_all, step0, gate=None):
        if step0 + (j1 - j0) > 70:
            raise Interrupt(step0)
        return original(self, prepared, j0, j1, xi_all, step0, gate)

    for resumed_ahead in (True, False):
        ck = tmp_path / f"resume-{resumed_ahead}.ckpt.npz"
        with pytest.MonkeyPatch.context() as m:
            m.setattr(Block, "steps", stop)
            with pytest.raises(Interrupt):
                train_stack(s.group, s.unit, teachers, runs, 12, "SI", cfg,
                            checkpoint_path=ck, draw_ahead=True)
        with np.load(ck) as data:
            assert int(data["counters"][0]) == 64
        res = train_stack(s.group, s.unit, teachers, runs, 12, "SI", cfg, checkpoint_path=ck,
                          draw_ahead=resumed_ahead)
        same(res, whole)


def test_an_error_while_drawing_ahead_reaches_the_caller_and_no_thread_is_left(paper):
    original = _Engine.teacher_targets
    calls = []

    def failing(self, x_all):
        calls.append(threading.current_thread() is threading.main_thread())
        if len(calls) == 3:
            raise MemoryError("no room for the targets")
        return original(self, x_all)

    before = threading.active_count()
    cfg = TrainConfig(T=200 / 16, n_eval=32, rng_chunk=8)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_Engine, "teacher_targets", failing)
        m.setattr(chunk_feed, "MAX_CHUNKS", 2)
        with pytest.raises(MemoryError, match="training needs more memory"):
            train(paper, MIXED[:1], cfg, draw_ahead=True)
    # the first two chunks (one call) in turn, the next ones ahead
    assert calls == [True, True, False]
    assert threading.active_count() == before


def test_by_default_runs_and_stacks_draw_ahead_on_two_threads_of_a_gated_kernel(
        paper, caplog, torch_threads):
    cfg = TrainConfig(T=1.0, n_eval=32, backend="native")
    seen = {}
    original = Block.steps

    def record(self, prepared, j0, j1, xi_all, step0, gate=None):
        seen.setdefault(len(self.runs), set()).add(type(gate).__name__)
        return original(self, prepared, j0, j1, xi_all, step0, gate)

    with pytest.MonkeyPatch.context() as m, caplog.at_level(logging.INFO, logger="mfsym"):
        m.setattr(Block, "steps", record)
        train(paper, MIXED[:1], cfg, threads=2)
        assert "next chunk drawn ahead" in caplog.text
        caplog.clear()
        train(paper, [MIXED[0], MIXED[2]], cfg, threads=2)  # one block of two runs
        assert "next chunk drawn ahead" in caplog.text
        caplog.clear()
        train(paper, MIXED[:1], cfg, threads=1)
        assert "drawn ahead" not in caplog.text
        train(paper, [MIXED[0], MIXED[2]], cfg, threads=1)
        assert "drawn ahead" not in caplog.text
        train(paper, MIXED[:1], TrainConfig(T=1.0, n_eval=32, backend="eager"), threads=2)
        assert "drawn ahead" not in caplog.text
    # on two threads the kernel's second thread waits at the gate while a chunk is drawn
    # (the first chunk is drawn in turn, with no gate), for one run and for a stack
    assert seen == {1: {"Gate", "NoneType"}, 2: {"Gate", "NoneType"}}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("runs", [MIXED[:1], MIXED], ids=["one run", "stack"])
def test_two_threads_with_the_gate_train_the_bits_of_one_thread(paper, dtype, runs,
                                                                 torch_threads):
    """N = 256, B = 20: enough work per step for the kernel's second thread, which joins
    each call when the chunk drawn ahead is done (the stack: two blocks, one with the
    two views of FA, each call with the gate)."""
    s, teachers = paper
    cfg = TrainConfig(T=200 / 256, n_eval=64, n_snapshots=3, backend="native", dtype=dtype)
    gated = train_stack(s.group, s.unit, teachers, runs, 256, "WI", cfg, threads=2)
    in_turn = train_stack(s.group, s.unit, teachers, runs, 256, "WI", cfg, threads=2,
                          draw_ahead=False)
    alone = train_stack(s.group, s.unit, teachers, runs, 256, "WI", cfg, threads=1)
    same(gated, in_turn)
    same(gated, alone)
