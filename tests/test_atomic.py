"""The one atomic writer: complete files appear at once, failures leave nothing behind."""

import errno
import os
import stat
import threading

import pytest

from mfsym.records import atomic
from mfsym.records.atomic import (
    ChecksumError,
    atomic_path,
    checksum_path,
    file_sha256,
    replace_checked,
    verify_file,
    write_text,
)


def test_success_moves_the_file_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        dest = write_text(tmp_path / "sub" / "a.txt", "hello")
    finally:
        os.umask(old)
    assert dest.read_text() == "hello"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.txt", "a.txt.sha256"]


def test_failure_leaves_neither_destination_nor_temporary(tmp_path):
    dest = tmp_path / "b.nc"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_complete_file(tmp_path):
    dest = write_text(tmp_path / "c.txt", "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(dest) as tmp:
            tmp.write_text("half of the new")
            raise KeyboardInterrupt
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "c.txt.sha256"]
    verify_file(dest)


def test_sidecar_holds_the_sha256_in_sha256sum_format(tmp_path):
    dest = write_text(tmp_path / "d.tex", "\\newcommand{\\x}{1}\n")
    digest, name = checksum_path(dest).read_text().split()
    assert (digest, name) == (file_sha256(dest), "d.tex")
    assert verify_file(dest) == dest


@pytest.mark.parametrize("damage", ["garble", "truncate", "drop_sidecar", "stale_sidecar"])
def test_verify_refuses_damaged_files_naming_them(tmp_path, damage):
    dest = write_text(tmp_path / "e.txt", "0123456789" * 100)
    if damage == "garble":
        data = bytearray(dest.read_bytes())
        data[500:508] = b"\xff" * 8
        dest.write_bytes(bytes(data))
    elif damage == "truncate":
        dest.write_bytes(dest.read_bytes()[:700])
    elif damage == "drop_sidecar":
        checksum_path(dest).unlink()
    else:  # a new file put in place without its own checksum
        dest.write_text("another content")
    with pytest.raises(ChecksumError, match="e.txt") as info:
        verify_file(dest)
    assert info.value.path == dest


def test_a_crash_before_the_sidecar_leaves_a_refused_file(tmp_path, monkeypatch):
    dest = write_text(tmp_path / "f.txt", "old")
    real_replace = os.replace

    def crash_on_sidecar(src, dst):
        if str(dst).endswith(".sha256"):
            raise KeyboardInterrupt  # the process dies between the two renames
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_sidecar)
    with pytest.raises(KeyboardInterrupt):
        write_text(dest, "new")
    monkeypatch.undo()
    assert dest.read_text() == "new"
    with pytest.raises(ChecksumError, match="no checksum file"):
        verify_file(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_replace_checked_moves_the_checksum_with_the_file(tmp_path):
    src = write_text(tmp_path / "g.new", "payload")
    write_text(tmp_path / "g", "older payload")
    dest = replace_checked(src, tmp_path / "g")
    assert verify_file(dest).read_text() == "payload"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g", "g.sha256"]


def test_permissions_come_without_touching_the_process_umask(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        def forbidden(mask):
            raise AssertionError("os.umask changes the umask of every thread")

        monkeypatch.setattr(os, "umask", forbidden)
        dest = write_text(tmp_path / "h.txt", "x")
        monkeypatch.undo()
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert stat.S_IMODE(checksum_path(dest).stat().st_mode) == 0o640


def test_concurrent_writes_get_the_umask_mode_and_keep_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        errors = []

        def writer(k):
            try:
                for i in range(25):
                    write_text(tmp_path / f"t{k}" / f"{i}.txt", str(i))
            except Exception as exc:  # collected: an assertion in a thread is lost
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        now = os.umask(0o022)
    finally:
        os.umask(old)
    assert errors == []
    assert now == 0o022
    modes = {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert modes == {0o644}


def test_a_full_disk_while_staging_the_sidecar_leaves_no_staging_file(tmp_path, monkeypatch):
    """ENOSPC can hit the sidecar's write after the data file was staged: neither the
    data's nor the sidecar's temporary file may stay behind, nor a destination."""
    def full(digest, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_sidecar_text", full)
    dest = tmp_path / "out" / "r.nc"
    dest.parent.mkdir()
    with pytest.raises(OSError, match="No space left"), atomic_path(dest) as tmp:
        tmp.write_bytes(b"data")
    assert list(dest.parent.iterdir()) == []
