"""Job logs: a job's log holds its start, its messages, its end or its traceback."""

import logging
import re
import warnings
from types import SimpleNamespace

import pytest

from mfsym import __version__
from mfsym.records.joblog import job_log, script_log

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
