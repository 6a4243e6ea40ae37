"""Stage times: the per-stage wall times read back from job logs match what was written."""

from datetime import datetime

import pytest

from mfsym.records.joblog import job_log
from mfsym.records.stage_times import job_times, main, stage_times


def write_log(path, attempts):
    """Write a job log by hand: ``attempts`` is a list of (job, start "HH:MM:SS", end)
    where end is ("done", seconds), ("failed", seconds) or None (still running)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for job, start, end in attempts:
        lines.append(f"2026-01-02 {start},000 INFO mfsym.records.joblog: start {job} "
                     "(mfsym 0.1.0)")
        lines.append(f"2026-01-02 {start},500 INFO mfsym.records.joblog: inputs: (none)")
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
    with job_log(root / "figures" / "fig.log", "fig_rmd init=SI"):
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
