"""Job logs: what one pipeline job did, in the log file its rule declares.

``job_log(path, job)`` sends every ``logging`` record at INFO and above (the library's own
messages and Python warnings included) to ``path`` while the block runs. The log opens with
a start line (the job, its inputs and outputs, the mfsym version) and ends with the wall
time; when the block raises, the full traceback is written before the exception goes on,
so the job still fails and its log says why. Records are flushed as they are written, so a
killed job's log is complete up to the kill. The file is appended to: a rerun of a failed
or killed job keeps the earlier attempt above its own start line.

``script_log(job)`` does the same for a workflow script, given the object the script
directive injects (it reads ``log``, ``rule``, ``wildcards``, ``input`` and ``output``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from mfsym import __version__

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger(__name__)


def _paths(label: str, paths: Iterable | None) -> str:
    paths = [str(p) for p in paths or ()]
    return f"{label}: {', '.join(paths) if paths else '(none)'}"


@contextlib.contextmanager
def job_log(
    path, job: str, inputs: Iterable | None = None, outputs: Iterable | None = None,
) -> Iterator[logging.Logger]:
    """Log to ``path`` while the block runs (see the module docstring); yields a logger."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    start = time.perf_counter()
    try:
        log.info("start %s (mfsym %s)", job, __version__)
        log.info(_paths("inputs", inputs))
        log.info(_paths("outputs", outputs))
        yield log
    except BaseException:
        log.exception("failed %s after %.2f s", job, time.perf_counter() - start)
        raise
    else:
        log.info("done %s in %.2f s", job, time.perf_counter() - start)
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def describe(rule: str, wildcards: Mapping | None = None) -> str:
    """``rule`` and its wildcards (any object with ``items()``), e.g.
    ``train init=SI N=10 block=b0``."""
    items = wildcards.items() if wildcards else ()
    return " ".join([rule, *(f"{k}={v}" for k, v in items)])


def script_log(job) -> contextlib.AbstractContextManager[logging.Logger]:
    """:func:`job_log` for a workflow script, from the job object its directive injects."""
    return job_log(
        job.log[0], describe(job.rule, job.wildcards), inputs=list(job.input),
        outputs=list(job.output),
    )
