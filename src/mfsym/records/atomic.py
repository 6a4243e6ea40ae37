"""Atomic file writes with checksums: every result, figure, table and checkpoint goes here.

``atomic_path(dest)`` yields a temporary path in the destination's folder; when the block
ends normally the file is flushed to disk, given the usual permissions (``0666 & ~umask``,
whereas ``mkstemp`` creates ``0600``) and renamed onto ``dest`` with ``os.replace``, which
is atomic on POSIX file systems. If the block raises, the temporary file is removed. An
interrupted write therefore never leaves a file at ``dest`` that looks complete.

Every file written this way gets a sidecar ``<dest>.sha256`` holding the SHA-256 of its
bytes, in the format of ``sha256sum`` (``sha256sum -c`` checks it). The order of the steps
makes any crash detectable: the digest is computed from the finished temporary file and
staged as a temporary sidecar; then the old sidecar is removed, the data file renamed into
place and the new sidecar renamed after it. A crash in between leaves a data file without
a sidecar (refused), never a data file with a sidecar that vouches for other bytes.

:func:`verify_file` is what readers call before they hand a file to a parser (netCDF/HDF5
can spin forever on garbled bytes): a missing sidecar, or bytes that do not match it,
raise :class:`ChecksumError` naming the file.

A write that fails with an :class:`OSError` is re-raised as :class:`WriteError`, naming the
destination and the cause; when the cause is opaque and the file system is (nearly) full,
the message says so.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHECKSUM_SUFFIX = ".sha256"
_CHUNK = 1 << 20
# Free space below which an opaque write error is reported as a full file system.
LOW_SPACE_BYTES = 1 << 20


class ChecksumError(ValueError):
    """A file lacks its checksum sidecar, or its bytes do not match it."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {reason}; delete it (and {checksum_path(path).name}) "
                         "and rebuild it")


class WriteError(OSError):
    """Writing a file failed; the message names the destination and the cause."""


def _proc_umask() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _import_umask() -> int:
    # Without /proc, read it once while the module is imported (before worker threads
    # exist): os.umask can only be read by setting it, unsafe while threads create files.
    mask = _proc_umask()
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _import_umask()


def _umask() -> int:
    """The process umask, read without changing it (Linux: /proc; else as at import)."""
    mask = _proc_umask()
    return _UMASK_AT_IMPORT if mask is None else mask


def checksum_path(path) -> Path:
    """The sidecar ``<path>.sha256`` holding the checksum of ``path``."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def file_sha256(path) -> str:
    """The SHA-256 (hex) of the bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def recorded_sha256(path) -> str:
    """The digest recorded in the sidecar of ``path``; :class:`ChecksumError` if none."""
    sidecar = checksum_path(path)
    try:
        text = sidecar.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ChecksumError(path, f"no checksum file {sidecar.name} (incomplete write?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChecksumError(path, f"unreadable checksum file {sidecar.name} ({exc})") from exc
    digest = text.split(maxsplit=1)[0] if text.strip() else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ChecksumError(path, f"malformed checksum file {sidecar.name}")
    return digest


def verify_file(path) -> Path:
    """Check ``path`` against its sidecar before anything parses it; returns the path.

    Raises :class:`ChecksumError` (naming the file) if the file or its sidecar is missing or
    the bytes differ (garbled, truncated, or replaced without its checksum).
    """
    path = Path(path)
    expected = recorded_sha256(path)
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        raise ChecksumError(path, "the file is missing") from None
    if actual != expected:
        raise ChecksumError(
            path, f"SHA-256 mismatch (recorded {expected[:12]}…, file {actual[:12]}…): "
            "the file is corrupted or truncated"
        )
    return path


def _sidecar_text(digest: str, path: Path) -> str:
    return f"{digest}  {path.name}\n"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform or file system allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_failure(dest, exc: BaseException, needed: int | None = None) -> WriteError:
    """A :class:`WriteError` naming ``dest`` and the cause of ``exc``.

    When the cause is not already "no space left", the free space of the destination's
    file system is checked: if it is below ``needed`` bytes (or nearly nothing), the error
    says the device is full, since HDF5 reports a full disk as a bare "HDF error".
    """
    dest = Path(dest)
    code = getattr(exc, "errno", None)
    cause = f"{type(exc).__name__}: {exc}"
    if code != errno.ENOSPC:
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(dest.parent).free
            if free < max(LOW_SPACE_BYTES, needed or 0):
                code = errno.ENOSPC
                cause += (f"; the file system holding {dest.parent} has {free} bytes free: "
                          "no space left on device")
    err = WriteError(code, f"could not write {dest}: {cause}")
    err.filename = str(dest)
    return err


def _cleanup(*paths: Path | None) -> None:
    for p in paths:
        if p is None:
            continue
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)


def _stage_sidecar(dest: Path, digest: str) -> Path:
    """Write the sidecar of ``dest`` to a temporary file next to it (not yet in place)."""
    sidecar = checksum_path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{sidecar.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(_sidecar_text(digest, dest))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:  # a full disk fails the write or the close: leave no staging file
        _cleanup(Path(tmp))
        raise
    return Path(tmp)


def _install(tmp: Path, tmp_sidecar: Path | None, dest: Path) -> None:
    """Move a finished file (and its staged sidecar) into place, sidecar last."""
    if tmp_sidecar is not None:
        checksum_path(dest).unlink(missing_ok=True)
    os.replace(tmp, dest)
    if tmp_sidecar is not None:
        os.replace(tmp_sidecar, checksum_path(dest))
    _fsync_dir(dest.parent)


@contextlib.contextmanager
def atomic_path(dest, suffix: str = ".tmp", checksum: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success move it onto ``dest``.

    With ``checksum`` (the default) the sidecar ``<dest>.sha256`` is written as described
    in the module docstring.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp_sidecar = None
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if checksum:
            tmp_sidecar = _stage_sidecar(dest, file_sha256(tmp))
        _install(tmp, tmp_sidecar, dest)
    except BaseException as exc:
        _cleanup(tmp, tmp_sidecar)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise write_failure(dest, exc) from exc
        raise


def replace_checked(src, dest) -> Path:
    """Rename ``src`` onto ``dest`` together with its checksum sidecar.

    The old sidecar of ``dest`` goes first and the new one is written after the rename, so
    an interruption leaves ``dest`` without a sidecar (refused by :func:`verify_file`).
    A ``src`` without a sidecar is moved without one.
    """
    src, dest = Path(src), Path(dest)
    try:
        digest = recorded_sha256(src)
    except ChecksumError:
        digest = None
    checksum_path(dest).unlink(missing_ok=True)
    os.replace(src, dest)
    if digest is not None:
        os.replace(_stage_sidecar(dest, digest), checksum_path(dest))
        checksum_path(src).unlink(missing_ok=True)
    _fsync_dir(dest.parent)
    return dest


def write_text(dest, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``dest`` atomically, with its checksum sidecar."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)
