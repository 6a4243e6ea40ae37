"""The chunks a training's step loop trains on, drawn in turn or ahead.

A chunk is ``rng_chunk`` steps of the streams' draws (inputs, DA group draws, noise ξ;
:class:`~mfsym.engine.blocks.Streams`), the teacher targets of every (teacher, stream)
pair on those inputs, and each block's views and targets (:meth:`Block.prepare`).

Chunks per call.  The loop hands the kernel up to :attr:`ChunkFeed.chunks` consecutive
chunks at once (:func:`chunks_per_call`): a small training (one run at N = 1000 draws
and trains a chunk in under a millisecond) would otherwise spend a fifth of its time in
the Python around each kernel call.  The chunks are drawn one after the other into
one buffer, and each chunk's targets and views are computed on their own, with the
shapes of a chunk drawn alone, so the numbers are those of one chunk per call.

Drawing ahead.  While the kernel trains one chunk, a thread of its own draws the next
chunk from the same generators in the same order into the other buffer set, and computes
its targets and views; the numbers are those drawn in turn.  Meanwhile the kernel's last
thread waits at a gate, which that thread opens when it is done (``mfsym_steps_gated``;
``mfsym_deep_steps_gated`` for the mean-ODE ResNet), so no third thread competes for the
cores.  A checkpoint written meanwhile stores the generators' state from before that
chunk (:meth:`ChunkFeed.stream_state`), so a resumed run draws it again.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

#: A kernel call holds more chunks only while it has fewer particle-sample updates than
#: this, and while its noise ξ stays within CALL_NOISE_BYTES (a level-2 cache or two: the
#: kernel reads the noise the draws wrote just before; beyond that it comes from memory).
CALL_UPDATES = 1 << 23
CALL_NOISE_BYTES = 2 << 20
#: At most this many chunks per call.
MAX_CHUNKS = 8


def chunks_per_call(updates_per_step: int, noise_bytes_per_step: int, rng_chunk: int,
                    device: torch.device) -> int:
    """Chunks of ``rng_chunk`` steps the loop draws and trains per kernel call.

    On a CPU, as many as keep a call under ``CALL_UPDATES`` particle-sample updates
    (``updates_per_step`` = runs · N · samples) and its noise under ``CALL_NOISE_BYTES``
    (``noise_bytes_per_step`` = streams · N · D · bytes per number), from 1 to
    ``MAX_CHUNKS``; elsewhere 1.  One float32 run at N = 1000 (D = 4, B = 20, chunks of
    32 steps) takes 4 chunks per call; one at N = 5000, or a stack of 12 runs, one."""
    if device.type != "cpu":
        return 1
    by_updates = CALL_UPDATES // max(1, int(updates_per_step) * int(rng_chunk))
    by_bytes = CALL_NOISE_BYTES // max(1, int(noise_bytes_per_step) * int(rng_chunk))
    return int(max(1, min(MAX_CHUNKS, by_updates, by_bytes)))


def plans_ahead(draw_ahead: bool | None, device: torch.device, kernel) -> bool:
    """Whether the next chunk is prepared on a thread of its own while the kernel trains
    this one.

    By default (``draw_ahead`` None) a training does so on a CPU with at least two
    threads when its kernel has threads that join late (``kernel.late_join``): while the
    chunk is drawn the kernel runs without its last thread, which joins as soon as the
    draws are done, so neither core idles while the other prepares.  Drawn in turn, the
    chunk leaves the kernel's cores to the preparing thread alone.

    * A single run draws 4 normal numbers per particle and step (B = 20 samples): through
      ``torch.randn`` (3.4–8 ns per float32 number) about as much per update as its
      kernel on one core (1–2.4 ns), through the native generator of :mod:`.fast_normal`
      (about 1.1 ns per number) a quarter to a third of that, with the chunk's teacher
      targets and views beside it.
    * In a stack the draws grow with the seeds, and the teacher targets and each run's
      views and targets with the (teacher, seed) pairs and the runs: drawn in turn they
      were a fifth of a rotation-stage job at N = 500; drawn ahead, jobs at N = 500 to
      1000 took 8–10 % less wall time, at N = 5000 2 % less."""
    if draw_ahead is not None:
        return bool(draw_ahead)
    return device.type == "cpu" and kernel.late_join and torch.get_num_threads() > 1


class ChunkFeed:
    """The chunks of one training (``eng``: the engine, whose ``streams``,
    ``teacher_targets``, ``blocks`` and ``kernel`` it uses), drawn ahead when ``ahead``.

    ``gate``: the kernel's gate that the loop passes to each call (None when nothing is
    drawn ahead or the kernel has no thread to hold back)."""

    def __init__(self, eng, ahead: bool, chunks: int = 1):
        self.eng, self.ahead, self.chunks = eng, ahead, chunks
        threads = max(1, torch.get_num_threads())
        # the kernel's last thread joins when the chunk drawn ahead is done
        self.gate = (eng.kernel.gate(threads - 1)
                     if ahead and eng.kernel.late_join and threads > 1 else None)
        self._pending = None  # (future of the next chunk, streams' state before it)
        self._pool = None

    @property
    def steps(self) -> int:
        """Steps of one draw: ``chunks`` chunks of ``rng_chunk`` steps."""
        return self.chunks * self.eng.cfg.rng_chunk

    def draw(self, size: int, slot: int):
        """The next ⌈size / rng_chunk⌉ chunks (whole chunks of ``rng_chunk`` steps, into
        buffer set ``slot``), their teacher targets and each block's views and targets
        for their first ``size`` steps: ``(ξ (n_seeds, k, N, D), [prepared of each
        block])``, with the views and targets of the chunks concatenated."""
        eng, chunk = self.eng, self.eng.cfg.rng_chunk
        n = -(-size // chunk)
        x_all, g_all, xi_all = eng.streams.next_chunk(n * chunk, slot, chunk)
        parts = []
        for lo in range(0, size, chunk):
            x, g = x_all[:, lo:lo + chunk], g_all[:, lo:lo + chunk]
            y = eng.teacher_targets(x)
            parts.append([b.prepare(x, g, y, min(chunk, size - lo)) for b in eng.blocks])
        if n == 1:
            return xi_all, parts[0]
        return xi_all, [tuple(torch.cat([p[i][j] for p in parts]) for j in range(2))
                        for i in range(len(eng.blocks))]

    def next(self, size: int, slot: int):
        """The chunk prepared ahead if there is one, else the next chunk drawn now."""
        if self._pending is None:
            return self.draw(size, slot)
        future, _ = self._pending
        self._pending = None
        return future.result()

    def prepare_ahead(self, size: int, slot: int) -> None:
        """Start drawing the next chunk on a thread of its own."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=1, initializer=torch.set_num_threads,
                initargs=(max(1, torch.get_num_threads()),))
        before = self.eng.streams.get_state()
        if self.gate is not None:
            self.gate.close()
        self._pending = (self._pool.submit(self._draw_then_open, size, slot), before)

    def _draw_then_open(self, size: int, slot: int):
        """:meth:`draw`, then the kernel's gate opens (also when it fails)."""
        try:
            return self.draw(size, slot)
        finally:
            if self.gate is not None:
                self.gate.open()

    def stream_state(self) -> np.ndarray:
        """The streams' state at the loop's current step: from before a chunk drawn
        ahead."""
        return self._pending[1] if self._pending is not None else self.eng.streams.get_state()

    def close(self) -> None:
        """Stop the thread, after the chunk being drawn ahead if any (an error there is
        dropped: the loop stopped before it needed that chunk)."""
        self._pending = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
