"""The end of a run: Snakemake's pending rate-limit timers are cancelled, so the command
returns when its last job is done; the workstation profile's rate is Snakemake's own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from mfsym.pipeline.rate_timers import cancel_pending_timers

ROOT = Path(__file__).resolve().parents[1]


def test_pending_timers_end_at_once_without_firing_and_other_threads_are_left_alone():
    fired = []
    timers = [threading.Timer(600, fired.append, args=(k,)) for k in range(3)]
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    for t in (*timers, other):
        t.start()
    try:
        t0 = time.monotonic()
        assert cancel_pending_timers() >= 3
        for t in timers:
            t.join(timeout=5)
        assert not any(t.is_alive() for t in timers)
        assert time.monotonic() - t0 < 5  # not the timers' 600 s
        assert fired == []
        assert other.is_alive()  # not a timer: untouched
    finally:
        stop.set()
        for t in timers:
            t.cancel()


def test_a_fired_timer_is_not_counted():
    done = threading.Event()
    t = threading.Timer(0, done.set)
    t.start()
    assert done.wait(5)
    t.join(5)
    assert cancel_pending_timers() == 0


def test_the_workflow_cancels_them_on_success_and_on_error():
    common = (ROOT / "workflow/rules/common.smk").read_text()
    for hook in ("onsuccess:", "onerror:"):
        body = common.split(hook, 1)[1].split("\n\n", 1)[0]
        assert "cancel_pending_timers()" in body, hook


TOY = """
from mfsym.pipeline.rate_timers import cancel_pending_timers

HOOK

rule all:
    input: expand("o{i}", i=range(4))

rule make:
    output: "o{i}"
    shell: "sleep 0.3; touch {output}"
"""


@pytest.mark.parametrize("hook", [True, False], ids=["hook", "no hook"])
def test_a_run_returns_when_its_last_job_is_done(tmp_path, hook):
    """Four jobs on one core with a 120 s rate timespan: each pass that leaves jobs
    waiting starts a 120 s timer.  With the hook the command returns in seconds; without
    it (the control, run with a 4 s timespan to keep the test short) it waits for them."""
    span = 120 if hook else 4
    text = TOY.replace("HOOK", "onsuccess:\n    cancel_pending_timers()\n" if hook else "")
    (tmp_path / "Snakefile").write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--workflow-profile", "none",
         "--max-jobs-per-timespan", f"1000/{span}s", "--quiet", "all"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all((tmp_path / f"o{i}").exists() for i in range(4))
    if hook:
        assert took < 60, took
    else:
        assert took >= span, took  # held by the timers: what the hook removes


def test_workstation_profile_keeps_snakemakes_job_rate_over_a_longer_timespan():
    # read with Snakemake's own parsers: a value it cannot read would stop every plain
    # `snakemake` run (the pipeline tests run without this profile)
    from snakemake.cli import get_argument_parser
    from snakemake.settings.types import MaxJobsPerTimespan

    profile = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    ours = MaxJobsPerTimespan.parse_choice(profile["max-jobs-per-timespan"])
    default = MaxJobsPerTimespan.parse_choice(
        get_argument_parser().get_default("max_jobs_per_timespan"))
    assert ours.max_jobs / ours.timespan == pytest.approx(default.max_jobs / default.timespan)
    assert ours.timespan == 10
