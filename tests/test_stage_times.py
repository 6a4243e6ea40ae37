"""Stage times: the per-stage wall times read back from job logs match what was written."""

from datetime import datetime

import pytest

from mfsym.records import joblog
from mfsym.records.stage_times import job_times, main, occupancy, stage_times


def write_log(path, attempts, threads=None):
    """Write a job log by hand: ``attempts`` is a list of (job, start "HH:MM:SS", end)
    where end is ("done", seconds), ("failed", seconds) or None (still running); each
    attempt records ``threads`` if given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for job, start, end in attempts:
        lines.append(f"2026-01-02 {start},000 INFO mfsym.records.joblog: start {job} "
                     "(mfsym 0.1.0)")
        lines.append(f"2026-01-02 {start},500 INFO mfsym.records.joblog: inputs: (none)")
        if threads is not None:
            lines.append(f"2026-01-02 {start},600 INFO mfsym.records.joblog: threads: "
                         f"{threads} (torch, OpenMP, BLAS)")
        if end is not None:
            kind, s = end
            level, word = ("INFO", "in") if kind == "done" else ("ERROR", "after")
            lines.append(f"2026-01-02 {start},900 {level} mfsym.records.joblog: "
                         f"{kind} {job} {word} {s:.2f} s")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def logs(tmp_path):
    root = tmp_path / "logs"
    write_log(root / "train" / "SI" / "N10" / "b0.log", [("train N=10", "10:00:00", ("done", 100))])
    write_log(root / "train" / "SI" / "N20" / "b0.log", [("train N=20", "10:00:30", ("done", 250))])
    # a failed first attempt, then a successful rerun: only the rerun counts
    write_log(root / "train" / "WI" / "N10" / "b0.log",
              [("train WI", "10:00:00", ("failed", 5)), ("train WI", "10:10:00", ("done", 60))])
    write_log(root / "metrics" / "a.log", [("metrics a", "10:05:00", ("done", 30))])
    write_log(root / "metrics" / "b.log", [("metrics b", "10:06:00", None)])
    write_log(root / "metrics" / "c.log", [("metrics c", "10:06:10", ("failed", 3))])
    write_log(root / "summary.log", [("summary", "10:20:00", ("done", 2))])
    (root / "empty.log").write_text("")
    return root


def test_each_stage_sums_its_finished_jobs_and_spans_first_start_to_last_end(logs):
    stages = {s.stage: s for s in stage_times(job_times(logs))}
    assert list(stages) == ["train", "metrics", "summary"]  # in the order they started
    train = stages["train"]
    assert (train.jobs, train.failed, train.running) == (3, 0, 0)
    assert train.job_s == pytest.approx(100 + 250 + 60)
    assert train.first == datetime(2026, 1, 2, 10, 0, 0)
    # last end: the WI rerun started at 10:10:00 and ran 60 s -> 10:11:00
    assert train.window_s == pytest.approx(11 * 60)
    metrics = stages["metrics"]
    assert (metrics.jobs, metrics.failed, metrics.running) == (1, 1, 1)
    assert metrics.job_s == pytest.approx(30)
    assert metrics.window_s == pytest.approx(73)  # 10:05:00 -> 10:06:10 + 3 s
    assert stages["summary"].window_s == pytest.approx(2)


def test_a_log_written_by_job_log_is_read_back_with_its_wall_time(tmp_path):
    root = tmp_path / "logs"
    with joblog.job_log(root / "figures" / "fig.log", "fig_rmd init=SI"):
        pass
    (t,) = job_times(root)
    assert (t.stage, t.job, t.status) == ("figures", "fig_rmd init=SI", "done")
    assert 0 <= t.wall_s < 5


def test_the_command_prints_every_stage_and_the_slowest_job(logs, capsys):
    assert main([str(logs), "--slowest", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split()[:5] == ["train", "3", "0", "0", "410s"]
    assert lines[2].split()[:5] == ["metrics", "1", "1", "1", "30s"]
    assert any(line.split()[:2] == ["all", "5"] for line in lines)
    assert lines[-1].split() == ["250s", "train:", "train", "N=20"]


def test_a_missing_log_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no log folder at .*nowhere"):
        job_times(tmp_path / "nowhere")


def test_a_workflow_script_log_records_its_threads_and_they_are_read_back(tmp_path, monkeypatch):
    # the thread pools of this test process are left alone: only the log line is real
    monkeypatch.setattr(joblog, "limit_threads", lambda n: n)

    class Job:
        rule, wildcards, input, output = "train", {"N": 10}, [], []
        threads = 3
        log = [str(tmp_path / "logs" / "train" / "N10.log")]

    with joblog.script_log(Job()):
        pass
    write_log(tmp_path / "logs" / "metrics" / "a.log", [("metrics a", "10:00:00", ("done", 4))])
    got = {t.stage: t.threads for t in job_times(tmp_path / "logs")}
    assert got == {"train": 3, "metrics": 1}  # a log without the line: one thread


def test_core_seconds_and_busy_threads_follow_the_jobs_by_hand(tmp_path):
    root = tmp_path / "logs"
    # a: 2 threads 10:00:00-10:01:40; b: 1 thread 10:00:50-10:02:30; c: 1 thread
    # 10:03:00-10:04:00; d: still running (left out of the occupancy)
    write_log(root / "train" / "a.log", [("a", "10:00:00", ("done", 100))], threads=2)
    write_log(root / "train" / "b.log", [("b", "10:00:50", ("done", 100))], threads=1)
    write_log(root / "metrics" / "c.log", [("c", "10:03:00", ("done", 60))])
    write_log(root / "metrics" / "d.log", [("d", "10:03:30", None)], threads=2)
    times = job_times(root)
    stages = {s.stage: s for s in stage_times(times)}
    assert stages["train"].core_s == pytest.approx(2 * 100 + 100)
    assert stages["metrics"].core_s == pytest.approx(60)
    # 2 busy for 50 s, 3 for 50 s, 1 for 50 s, none for 30 s, 1 for 60 s
    busy = occupancy(times)
    assert busy == pytest.approx({0: 30, 1: 110, 2: 50, 3: 50})
    assert sum(busy.values()) == pytest.approx(240)
    assert occupancy([]) == {}


def test_the_command_prints_core_seconds_and_the_busy_threads(tmp_path, capsys):
    root = tmp_path / "logs"
    write_log(root / "train" / "a.log", [("a", "10:00:00", ("done", 100))], threads=2)
    write_log(root / "train" / "b.log", [("b", "10:01:40", ("done", 40))], threads=1)
    assert main([str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:6] == ["train", "2", "0", "0", "140s", "240"]
    assert "threads busy: 1: 40s, 2: 100s" in lines
