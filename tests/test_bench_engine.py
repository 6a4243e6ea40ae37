"""The engine benchmark reports medians and spreads and never a non-positive time."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_engine.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_engine", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_marginal_time_is_positive_and_flags_its_fallback(bench):
    assert bench.marginal_time(1.0, 1.5, 10) == (pytest.approx(0.05), False)
    # noise on a busy machine: the longer run was not slower
    for short, long in ((1.5, 1.5), (2.0, 1.0)):
        value, fallback = bench.marginal_time(short, long, 10)
        assert fallback and value == pytest.approx(long / 20) and value > 0
    with pytest.raises(ValueError, match="positive wall times"):
        bench.marginal_time(0.0, 1.0, 10)


def test_summary_is_the_median_with_its_spread(bench):
    t = bench.summarize([3.0, 1.0, 2.0], upper_bound=True)
    assert (t.median, t.spread, t.marks()) == (2.0, 1.0, "†")
    assert t.ns_per_update(10**9) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="must be positive"):
        bench.summarize([1.0, 0.0])
    with pytest.raises(ValueError, match="must be positive"):
        bench.summarize([])


def test_a_short_run_prints_medians_spreads_and_the_legend(bench, capsys):
    bench.main(["--N", "40", "--stacks", "2", "--schemes", "vanilla", "--steps", "32",
                "--repeat", "2", "--sections", "table", "--threads", "1"])
    out = capsys.readouterr().out
    row = re.search(r"^\s+40\s+2\s+vanilla\s+32\s+([0-9.]+) \(±(\d+)%\)\S*\s+([0-9.]+) \(±",
                    out, flags=re.M)
    assert row, out
    assert float(row.group(1)) > 0 and float(row.group(3)) > 0
    assert "† upper bound" in out and "* taken under load" in out


def test_the_floor_section_prints_the_floor_and_both_kernels_ratios(bench, capsys):
    """The CPU's floor in ns per update and, for the step kernel and the first kernel,
    ns per update and the ratio to the floor, from one invocation."""
    engine_floor = pytest.importorskip("engine_floor")
    engine_floor.report(1, R=2, N=300, repeat=1)
    out = capsys.readouterr().out
    floor = re.search(r"= ([0-9.]+) ns per update on one core", out)
    assert floor and float(floor.group(1)) > 0, out
    for name in ("native", "native-v1"):
        row = re.search(rf"{name}: ([0-9.]+) ns per update \(±\d+%\), ([0-9.]+)× the floor",
                        out)
        assert row, out
        ratio = float(row.group(1)) / float(floor.group(1))
        assert float(row.group(2)) == pytest.approx(ratio, rel=0.02)


def test_the_load_section_takes_the_median_of_each_rounds_ratio(bench, monkeypatch, capsys):
    """Rounds of quiet-then-busy: the slowdown printed is the median over the rounds of
    busy / quiet, not the ratio of the two medians (4/3 here), and each round's busy
    figure is taken with the busy processes running and its quiet one without."""
    engine_load = pytest.importorskip("engine_load")
    quiet, busy, running = iter([1.0, 3.0, 4.0]), iter([4.0, 3.0, 8.0]), []

    class FakeBusy:
        def __init__(self, n):
            self.n = n

        def __enter__(self):
            running.append(self.n)

        def __exit__(self, *exc):
            running.pop()

    def fake_loop_time(runs, N, steps, *args, **kw):
        seconds = next(busy) if running else next(quiet)
        return bench.summarize([seconds * len(runs) * N * 20 / 1e9])

    monkeypatch.setattr(engine_load, "BusyCores", FakeBusy)
    monkeypatch.setattr(engine_load, "loop_time", fake_loop_time)
    monkeypatch.setattr(engine_load, "cores", lambda: 2)
    engine_load.oversubscription(["native"], ((1, 40),), 2, 3, None, None, None, 20)
    out = capsys.readouterr().out
    assert "fair-share bound on the slowdown 2.00×" in out, out
    row = re.search(r"quiet ([0-9.]+) \(±\d+%\), busy ([0-9.]+) \(±\d+%\) ns per update; "
                    r"slowdown ([0-9.]+)× \(([0-9.]+)–([0-9.]+) over the rounds\)", out)
    assert row, out
    assert [float(v) for v in row.groups()] == [3.0, 4.0, 2.0, 1.0, 4.0]


def test_the_load_section_runs_beside_real_busy_processes(bench, capsys):
    engine_load = pytest.importorskip("engine_load")
    from mfsym.core.groups import c2_swap
    from mfsym.core.teachers import paper_teachers
    from mfsym.core.units import make_unit

    unit = make_unit("matrix", 2, 2, "sigmoid")
    group = unit.group(c2_swap())
    engine_load.oversubscription(["native"], ((1, 40),), 1, 1, group, unit,
                                 paper_teachers(group), 20, budget=1, max_steps=256)
    out = capsys.readouterr().out
    row = re.search(r"busy ([0-9.]+) .* slowdown ([0-9.]+)×", out)
    assert row and float(row.group(1)) > 0 and float(row.group(2)) > 0, out
