"""Job logs: a job's log holds its start, its messages, its end or its traceback."""

import logging
import re
import signal
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest

from mfsym import __version__
from mfsym.records.joblog import attempts_path, job_log, script_log

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def boom():
    raise ValueError("no such teacher: 'XYZ'")


def test_a_failing_job_leaves_start_message_and_traceback_and_still_fails(tmp_path):
    path = tmp_path / "logs" / "job.log"
    with pytest.raises(ValueError, match="no such teacher"):
        with job_log(path, "fig_rmd init=SI", inputs=["summary.nc"], outputs=["a.pdf"]):
            logging.getLogger("mfsym.figures.rmd").info("drawing %d panels", 3)
            boom()
    text = path.read_text()
    lines = text.splitlines()
    assert re.match(rf"{STAMP} INFO \S+: start fig_rmd init=SI \(mfsym {__version__}\)$",
                    lines[0]), lines[0]
    assert "inputs: summary.nc" in lines[1] and "outputs: a.pdf" in lines[2]
    assert re.search(rf"^{STAMP} INFO mfsym.figures.rmd: drawing 3 panels$", text, re.M)
    assert re.search(r"ERROR \S+: failed fig_rmd init=SI after [0-9.]+ s$", text, re.M)
    assert "Traceback (most recent call last):" in text
    assert 'in boom\n    raise ValueError("no such teacher' in text
    assert lines[-1] == "ValueError: no such teacher: 'XYZ'"
    assert "done " not in text


def test_a_finished_job_logs_its_wall_time_and_then_lets_go_of_the_file(tmp_path):
    path = tmp_path / "job.log"
    other = logging.getLogger("elsewhere")
    with job_log(path, "summary"):
        other.info("while the job runs")
        warnings.warn("a deprecated keyword", UserWarning, stacklevel=1)
        assert "while the job runs" in path.read_text()  # flushed as written
    other.warning("after the job")
    text = path.read_text()
    assert "inputs: (none)" in text and "outputs: (none)" in text
    assert "UserWarning: a deprecated keyword" in text
    assert re.search(rf"^{STAMP} INFO \S+: done summary in [0-9.]+ s$", text.splitlines()[-1])
    assert "after the job" not in text
    assert not any(getattr(h, "baseFilename", None) == str(path)
                   for h in logging.getLogger().handlers)


def test_a_rerun_appends_below_the_earlier_attempt(tmp_path):
    path = tmp_path / "job.log"
    with pytest.raises(KeyboardInterrupt), job_log(path, "train"):
        raise KeyboardInterrupt
    with job_log(path, "train"):
        pass
    text = path.read_text()
    assert text.count("start train") == 2
    assert text.index("KeyboardInterrupt") < text.index("done train")


def test_script_log_describes_the_rule_with_its_wildcards(tmp_path):
    job = SimpleNamespace(
        log=[str(tmp_path / "train" / "SI" / "N10" / "b0.log")],
        rule="train",
        wildcards={"init": "SI", "N": "10", "block": "b0"},
        input=["teachers.nc", "initial.nc"],
        output=["runs.nc"],
    )
    with script_log(job):
        pass
    text = (tmp_path / "train" / "SI" / "N10" / "b0.log").read_text()
    assert "start train init=SI N=10 block=b0 (mfsym" in text
    assert "inputs: teachers.nc, initial.nc" in text and "outputs: runs.nc" in text


CHILD = """
import sys, time
from mfsym.records.joblog import job_log
with job_log(sys.argv[1], "train init=SI N=10 block=b0"):
    print("started", flush=True)
    time.sleep(60)
"""


def killed_child(path, sig):
    """A job that logs to ``path`` and is stopped by ``sig`` while it runs; its exit code."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(sig)
    return proc.wait(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_rerun_keeps_the_killed_attempt_after_snakemake_deleted_the_log(tmp_path, sig):
    """Snakemake deletes a job's log before it reruns the job: the killed attempt, and
    the signal that stopped it, must still be in the log the rerun leaves."""
    path = tmp_path / "logs" / "train" / "b0.log"
    assert killed_child(path, sig) == -sig  # the job still ends by its signal
    first = path.read_text()
    if sig == signal.SIGTERM:
        assert "stopped by signal SIGTERM" in first
    path.unlink()  # what Snakemake does before the rerun
    with job_log(path, "train init=SI N=10 block=b0"):
        pass
    text = path.read_text()
    assert text.startswith(first) and text.count("start train") == 2
    unclosed = "has no done or failed line" in text
    assert unclosed == (sig == signal.SIGKILL), text
    assert re.search(r"INFO \S+: done train .* s$", text.splitlines()[-1])
    assert not attempts_path(path).exists()  # a finished job leaves only its log


def test_a_failed_attempt_is_kept_through_the_deletion_too(tmp_path):
    path = tmp_path / "job.log"
    with pytest.raises(ValueError), job_log(path, "summary"):
        boom()
    path.unlink()
    with job_log(path, "summary"):
        pass
    text = path.read_text()
    assert text.index("no such teacher") < text.index("done summary")
    assert "has no done or failed line" not in text
