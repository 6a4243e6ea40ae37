"""The timers Snakemake's job-rate limiter leaves behind when a run ends.

Snakemake 9 re-runs its scheduler once a rate timespan (``--max-jobs-per-timespan``) has
passed: each scheduling pass that ends with ready jobs still waiting for cores starts a
``threading.Timer`` of one timespan, whose expiry starts the next pass.  These are not
daemon threads, so when the run is over the interpreter still waits for the last of them
before the ``snakemake`` command returns: up to one timespan.  The workstation profile
counts the rate over 10 s (at Snakemake's default rate) so that its scheduler re-runs
ten times less often while jobs wait; the workflow's ``onsuccess`` and ``onerror`` hooks
call :func:`cancel_pending_timers`, so the command still returns as soon as its last job
is done.
"""

from __future__ import annotations

import threading


def cancel_pending_timers() -> int:
    """Cancel every ``threading.Timer`` of this process that has not fired yet; returns
    how many.  A cancelled timer's thread ends at once without calling its function.
    Meant for the end of a run, when nothing is left to schedule."""
    timers = [t for t in threading.enumerate()
              if isinstance(t, threading.Timer) and t.is_alive()]
    for t in timers:
        t.cancel()
    return len(timers)
