"""The one atomic writer: complete files appear at once, failures leave nothing behind."""

import os
import stat

import pytest

from mfsym.records.atomic import atomic_path, write_text


def test_success_moves_the_file_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        dest = write_text(tmp_path / "sub" / "a.txt", "hello")
    finally:
        os.umask(old)
    assert dest.read_text() == "hello"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.txt"]


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
    assert [p.name for p in tmp_path.iterdir()] == ["c.txt"]
