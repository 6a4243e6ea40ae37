"""Checkpoints carry a file checksum; a damaged one is skipped before numpy opens it."""

import logging

import numpy as np
import pytest

from mfsym.engine import checkpoint as ckpt
from mfsym.records.atomic import checksum_path

META = {"what": "a test computation"}


def _write_two(tmp_path):
    path = tmp_path / "stack.ckpt.npz"
    ckpt.save_checkpoint(path, {"theta": np.zeros((50, 4)), "step": np.array(16)}, META)
    ckpt.save_checkpoint(path, {"theta": np.ones((50, 4)), "step": np.array(32)}, META)
    return path, ckpt._prev_path(path)


def test_each_checkpoint_and_its_previous_carry_their_checksum(tmp_path):
    path, prev = _write_two(tmp_path)
    assert checksum_path(path).exists() and checksum_path(prev).exists()
    assert int(ckpt.load_checkpoint(path, META)["step"]) == 32
    assert int(ckpt.read_checkpoint(prev, META)["step"]) == 16


@pytest.mark.parametrize("damage", ["garble", "drop_sidecar"])
def test_damaged_newest_is_never_opened_and_previous_is_used(
    tmp_path, monkeypatch, caplog, damage
):
    path, prev = _write_two(tmp_path)
    if damage == "garble":
        data = bytearray(path.read_bytes())
        mid = len(data) // 2
        data[mid:mid + 8] = bytes(8)
        path.write_bytes(bytes(data))
    else:
        checksum_path(path).unlink()
    opened = []
    real_load = np.load
    monkeypatch.setattr(ckpt.np, "load", lambda f, **kw: opened.append(f) or real_load(f, **kw))
    with caplog.at_level(logging.WARNING, logger="mfsym"):
        arrays = ckpt.load_checkpoint(path, META)
    assert int(arrays["step"]) == 16
    assert opened == [prev]
    assert "skipping checkpoint" in caplog.text and str(path) in caplog.text


def test_remove_checkpoint_removes_the_sidecars_too(tmp_path):
    path, _ = _write_two(tmp_path)
    ckpt.remove_checkpoint(path)
    assert list(tmp_path.iterdir()) == []


def test_a_kill_between_rotation_and_rename_keeps_the_newest(tmp_path):
    """Killed after the old file became ``.prev`` but before the staged new one was renamed
    into place: the staged file (complete, with its checksum) is the newest and is used."""
    path, _ = _write_two(tmp_path)
    staged = ckpt._staging_path(path)
    ckpt.replace_checked(path, staged)  # the state a kill in that window leaves
    assert not path.exists()
    assert int(ckpt.load_checkpoint(path, META)["step"]) == 32
    ckpt.remove_checkpoint(path)
    assert not staged.exists() and not checksum_path(staged).exists()
