"""Atomic file writes: every result, figure, table and checkpoint goes through here.

``atomic_path(dest)`` yields a temporary path in the destination's folder; when the block
ends normally the file is flushed to disk, given the usual permissions (``0666 & ~umask``,
whereas ``mkstemp`` creates ``0600``) and renamed onto ``dest`` with ``os.replace``, which
is atomic on POSIX file systems. If the block raises, the temporary file is removed. An
interrupted write therefore never leaves a file at ``dest`` that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success move it onto ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(dest, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)
