"""Where a pipeline run's time went: per-stage wall times read back from the job logs.

Every job writes its log with :func:`mfsym.records.joblog.job_log`: a timestamped ``start``
line, then ``done <job> in <s> s`` or ``failed <job> after <s> s``. A log file may hold
several attempts (a rerun appends); the last attempt is the one that counts. A log whose
last attempt has a start and no end is a job still running (or killed).

The stage of a job is the first folder of its log below the log root (``train``,
``metrics``, ``rotation``, …; a log directly in the root is its own stage). For each stage:

* ``jobs``: finished jobs (``failed``/``running`` counted apart),
* ``job_s``: the sum of the finished jobs' own wall times (on the 2 cores of a workstation
  two jobs may run at once, so this can exceed the window),
* ``window_s``: last end − first start over the stage's attempts, the stage's elapsed time,
* ``first``/``last``: the window's bounds,
* ``core_s``: Σ wall time × threads over the finished jobs, the threads being those the log
  records (``threads: k``, written by the job log from the rule's ``threads``; 1 if absent).

Over the whole run, :func:`occupancy` gives how long exactly k job threads were busy, for
each k: with ``--cores c``, the run's wall time can only shrink below Σ core_s / c by doing
less work, and the time spent with fewer than c threads busy is what better packing of the
jobs could at most win back.

    python -m mfsym.records.stage_times results/logs
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

_STAMP = r"(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_START = re.compile(rf"^{_STAMP} INFO \S+: start (?P<job>.+) \(mfsym [^)]*\)$")
_END = re.compile(
    rf"^{_STAMP} (?:INFO|ERROR) \S+: (?P<kind>done|failed) (?P<job>.+?) "
    r"(?:in|after) (?P<s>[0-9.]+) s$"
)
_THREADS = re.compile(rf"^{_STAMP} INFO \S+: threads: (?P<k>[0-9]+) ")


@dataclass(frozen=True)
class JobTime:
    """The last attempt recorded in one job log."""

    stage: str
    job: str
    start: datetime
    status: str  # "done", "failed" or "running"
    wall_s: float | None  # None while running
    threads: int = 1  # the threads the job was given (its log's "threads: k" line)

    @property
    def end(self) -> datetime | None:
        return None if self.wall_s is None else self.start + timedelta(seconds=self.wall_s)


def _stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f")


def read_job_time(path: Path, stage: str) -> JobTime | None:
    """The last attempt of the log at ``path`` (``None`` if it holds no start line)."""
    last = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if m := _START.match(line):
            last = JobTime(stage, m["job"], _stamp(m["stamp"]), "running", None)
        elif last is not None and (m := _THREADS.match(line)):
            last = replace(last, threads=int(m["k"]))
        elif last is not None and (m := _END.match(line)) and m["job"] == last.job:
            last = replace(last, status=m["kind"], wall_s=float(m["s"]))
    return last


def job_times(log_root) -> list[JobTime]:
    """The last attempt of every ``*.log`` below ``log_root``, sorted by start."""
    root = Path(log_root)
    if not root.is_dir():
        raise FileNotFoundError(f"no log folder at {str(root)!r}")
    out = []
    for path in sorted(root.rglob("*.log")):
        rel = path.relative_to(root)
        stage = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if (t := read_job_time(path, stage)) is not None:
            out.append(t)
    return sorted(out, key=lambda t: t.start)


@dataclass(frozen=True)
class StageTime:
    stage: str
    jobs: int
    failed: int
    running: int
    job_s: float
    core_s: float
    first: datetime
    last: datetime | None  # None if no job of the stage has ended

    @property
    def window_s(self) -> float | None:
        return None if self.last is None else (self.last - self.first).total_seconds()


def stage_times(times: list[JobTime]) -> list[StageTime]:
    """One :class:`StageTime` per stage, in the order the stages started."""
    stages: dict[str, list[JobTime]] = {}
    for t in sorted(times, key=lambda t: t.start):
        stages.setdefault(t.stage, []).append(t)
    out = []
    for stage, ts in stages.items():
        ends = [t.end for t in ts if t.end is not None]
        out.append(StageTime(
            stage=stage,
            jobs=sum(t.status == "done" for t in ts),
            failed=sum(t.status == "failed" for t in ts),
            running=sum(t.status == "running" for t in ts),
            job_s=sum(t.wall_s for t in ts if t.status == "done"),
            core_s=sum(t.wall_s * t.threads for t in ts if t.status == "done"),
            first=min(t.start for t in ts),
            last=max(ends) if ends else None,
        ))
    return out


def occupancy(times: list[JobTime]) -> dict[int, float]:
    """Seconds during which exactly k job threads were busy, for each k seen, over
    [first start, last end] of the jobs that have ended (running jobs are left out).

    A job of ``threads`` t counts t from its start to its end; the values sum to the window.
    """
    ended = [t for t in times if t.end is not None]
    if not ended:
        return {}
    events = sorted([(t.start, t.threads) for t in ended] + [(t.end, -t.threads) for t in ended])
    busy, now, out = 0, events[0][0], {}
    for when, change in events:
        out[busy] = out.get(busy, 0.0) + (when - now).total_seconds()
        busy, now = busy + change, when
    return {k: s for k, s in sorted(out.items()) if s > 0}


def format_table(stages: list[StageTime], slowest: list[JobTime] = (),
                 busy: dict[int, float] | None = None) -> str:
    """A plain-text table of ``stages`` (then the :func:`occupancy` ``busy`` and the slowest
    jobs, if given)."""
    rows = [f"{'stage':<12} {'jobs':>5} {'failed':>6} {'running':>7} {'sum of jobs':>12} "
            f"{'core-s':>8} {'window':>10}  first start -> last end"]
    for s in stages:
        window = "-" if s.window_s is None else f"{s.window_s:9.0f}s"
        last = "-" if s.last is None else s.last.strftime("%H:%M:%S")
        rows.append(f"{s.stage:<12} {s.jobs:5d} {s.failed:6d} {s.running:7d} "
                    f"{s.job_s:11.0f}s {s.core_s:8.0f} {window:>10}  "
                    f"{s.first:%H:%M:%S} -> {last}")
    if stages:
        first = min(s.first for s in stages)
        lasts = [s.last for s in stages if s.last is not None]
        if lasts:
            total = (max(lasts) - first).total_seconds()
            rows.append(f"{'all':<12} {sum(s.jobs for s in stages):5d} "
                        f"{sum(s.failed for s in stages):6d} "
                        f"{sum(s.running for s in stages):7d} "
                        f"{sum(s.job_s for s in stages):11.0f}s "
                        f"{sum(s.core_s for s in stages):8.0f} {total:9.0f}s")
    if busy:
        rows += ["", "threads busy: " + ", ".join(f"{k}: {s:.0f}s" for k, s in busy.items())]
    if slowest:
        rows += ["", "slowest jobs:"]
        rows += [f"  {t.wall_s:9.0f}s  {t.stage}: {t.job}" for t in slowest]
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log_root", nargs="?", default="results/logs",
                   help="the results' log folder (default: results/logs)")
    p.add_argument("--slowest", type=int, default=10, metavar="K",
                   help="also list the K slowest finished jobs (default 10)")
    args = p.parse_args(argv)
    times = job_times(args.log_root)
    done = sorted((t for t in times if t.status == "done"), key=lambda t: -t.wall_s)
    print(format_table(stage_times(times), done[: args.slowest], occupancy(times)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
