"""Job logs: what one pipeline job did, in the log file its rule declares.

``job_log(path, job)`` sends every ``logging`` record at INFO and above (the library's own
messages and Python warnings included) to ``path`` while the block runs. The log opens with
a start line (the job, its inputs and outputs, the mfsym version) and ends with the wall
time; when the block raises, the full traceback is written before the exception goes on,
so the job still fails and its log says why; SIGTERM and SIGHUP are logged by name before
the process ends by them. Records are flushed as they are written, so a killed job's log
is complete up to the kill.

A rerun of a failed or killed job keeps the earlier attempts above its own start line.
Snakemake deletes a job's declared log before it reruns the job, so every record is also
written to a sibling ``.<name>.attempts`` that Snakemake does not know of: a new attempt
first restores the log from it, and says when the attempt before ended without a ``done``
or ``failed`` line (killed by a signal it could not catch, SIGKILL or out of memory, or the
machine stopped). A finished job deletes the sibling; its log holds every attempt.

``script_log(job)`` does the same for a workflow script, given the object the script
directive injects (it reads ``log``, ``rule``, ``wildcards``, ``input`` and ``output``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from mfsym import __version__
from mfsym.records.threads import limit_threads

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger(__name__)


def _paths(label: str, paths: Iterable | None) -> str:
    paths = [str(p) for p in paths or ()]
    return f"{label}: {', '.join(paths) if paths else '(none)'}"


#: signals a job is stopped by that it can log before it ends
_LOGGED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_START = re.compile(r"^(\S+ \S+) INFO \S+: start (.+) \(mfsym [^)]*\)$")
_END = re.compile(r"^\S+ \S+ (?:INFO|ERROR) \S+: (?:(?:done|failed) .+ (?:in|after) [0-9.]+ s"
                  r"|.+ stopped by signal \S+)$")


def attempts_path(path: Path) -> Path:
    """The sibling that keeps every attempt of a job's log across Snakemake's deletions."""
    return path.with_name(f".{path.name}.attempts")


def _unclosed_start(text: str) -> str | None:
    """The time stamp of the last attempt in ``text`` if it has no done/failed line."""
    last = None
    for line in text.splitlines():
        if m := _START.match(line):
            last = m[1]
        elif _END.match(line):
            last = None
    return last


def _restore(path: Path, attempts: Path) -> str | None:
    """Put the earlier attempts back into ``path`` (Snakemake deleted it); returns the
    start stamp of an earlier attempt that ended without a done or failed line."""
    try:
        earlier = attempts.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    current = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    if earlier and not current.startswith(earlier):
        path.write_text(earlier + current, encoding="utf-8")
    return _unclosed_start(earlier)


@contextlib.contextmanager
def _signals_logged(job: str) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP are logged by name; the process then ends
    by the same signal (its default action), as it would have without the log."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        log.error("%s stopped by signal %s", job, signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {sig: signal.signal(sig, handler) for sig in _LOGGED_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def job_log(
    path, job: str, inputs: Iterable | None = None, outputs: Iterable | None = None,
) -> Iterator[logging.Logger]:
    """Log to ``path`` while the block runs (see the module docstring); yields a logger."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    attempts = attempts_path(path)
    unclosed = _restore(path, attempts)
    handlers = [logging.FileHandler(f, mode="a", encoding="utf-8") for f in (path, attempts)]
    root = logging.getLogger()
    old_level = root.level
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.setLevel(logging.INFO)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    start = time.perf_counter()
    finished = False
    try:
        with _signals_logged(job):
            if unclosed:
                log.warning(
                    "the attempt started %s above has no done or failed line: it was killed "
                    "by a signal it could not log (SIGKILL, out of memory) or the machine "
                    "stopped", unclosed,
                )
            log.info("start %s (mfsym %s)", job, __version__)
            log.info(_paths("inputs", inputs))
            log.info(_paths("outputs", outputs))
            yield log
    except BaseException:
        log.exception("failed %s after %.2f s", job, time.perf_counter() - start)
        raise
    else:
        log.info("done %s in %.2f s", job, time.perf_counter() - start)
        finished = True
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
        if finished:
            attempts.unlink(missing_ok=True)


def describe(rule: str, wildcards: Mapping | None = None) -> str:
    """``rule`` and its wildcards (any object with ``items()``), e.g.
    ``train init=SI N=10 block=b0``."""
    items = wildcards.items() if wildcards else ()
    return " ".join([rule, *(f"{k}={v}" for k, v in items)])


@contextlib.contextmanager
def script_log(job) -> Iterator[logging.Logger]:
    """:func:`job_log` for a workflow script, from the job object its directive injects;
    every thread pool of the job is first limited to the rule's ``threads``
    (:func:`mfsym.records.threads.limit_threads`), never the machine's core count."""
    threads = getattr(job, "threads", None)
    with job_log(
        job.log[0], describe(job.rule, job.wildcards), inputs=list(job.input),
        outputs=list(job.output),
    ) as logger:
        if threads is not None:
            logger.info("threads: %d (torch, OpenMP, BLAS)", limit_threads(threads))
        yield logger
