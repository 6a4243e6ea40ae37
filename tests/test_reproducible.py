"""Rebuilding the same thing gives the same bytes: no wall-clock value in any result file."""

from __future__ import annotations

import hashlib
import subprocess
import time

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from mfsym.figures.style import save_figure
from mfsym.records import results

CONFIG = {"training": {"alpha": 50.0}, "seeds": [0, 1]}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset() -> xr.Dataset:
    return xr.Dataset({"risk": results.variable(("n",), np.linspace(0, 1, 50), "risk")})


def test_history_carries_source_date_epoch(monkeypatch, tmp_path):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    path = results.write_dataset(dataset(), tmp_path / "a.nc", CONFIG, "t")
    assert results.read_dataset(path).attrs["history"] == "2023-11-14T22:13:20+00:00 created"


def test_without_source_date_epoch_the_commit_time_is_the_date(monkeypatch, tmp_path):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    env = {"GIT_AUTHOR_DATE": "2024-05-01T12:00:00+00:00",
           "GIT_COMMITTER_DATE": "2024-05-01T12:00:00+00:00",
           "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@y", "GIT_COMMITTER_NAME": "x",
           "GIT_COMMITTER_EMAIL": "x@y", "PATH": "/usr/bin:/bin"}
    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "m"]):
        subprocess.run(["git", *cmd], cwd=repo, env=env, check=True)
    assert results.source_date(repo).isoformat() == "2024-05-01T12:00:00+00:00"
    assert results.source_date(tmp_path / "nowhere") is None  # no checkout: no date at all


def test_same_dataset_written_twice_gives_the_same_bytes(monkeypatch, tmp_path):
    """netCDF-C writes no HDF5 object times and the history date is the source date, so two
    writes seconds apart are byte-identical."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a = results.write_dataset(dataset(), tmp_path / "a.nc", CONFIG, "t")
    time.sleep(1.1)
    b = results.write_dataset(dataset(), tmp_path / "b.nc", CONFIG, "t")
    assert sha(a) == sha(b)


def test_provenance_records_the_lock_sha256(monkeypatch, tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==2.0 --hash=sha256:" + "0" * 64 + "\n")
    monkeypatch.setenv(results.LOCK_ENV, str(lock))
    path = results.write_dataset(dataset(), tmp_path / "a.nc", CONFIG, "t")
    attrs = results.read_dataset(path).attrs
    assert attrs["lock_sha256"] == sha(lock)
    assert "numpy==" in attrs["package_versions"]


def test_the_checkout_lock_is_found_from_anywhere(monkeypatch, tmp_path):
    monkeypatch.delenv(results.LOCK_ENV, raising=False)
    found = results.lock_file(tmp_path)  # not in tmp_path: the package's own checkout
    if found is None:
        pytest.skip("mfsym is not installed from a checkout with requirements.lock")
    assert results.lock_sha256(tmp_path) == sha(found)


def draw():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [1, 0, 2], label="vanilla")
    ax.set_title(r"RMD to $E^G$")
    ax.legend()
    return fig


def test_a_figure_redrawn_later_has_the_same_pdf_and_png_bytes(tmp_path):
    save_figure(draw(), {"pdf": tmp_path / "a.pdf", "png": tmp_path / "a.png"}, dpi=50)
    time.sleep(1.1)  # a creation date would differ by now
    save_figure(draw(), {"pdf": tmp_path / "b.pdf", "png": tmp_path / "b.png"}, dpi=50)
    assert b"CreationDate" not in (tmp_path / "a.pdf").read_bytes()
    assert sha(tmp_path / "a.pdf") == sha(tmp_path / "b.pdf")
    assert sha(tmp_path / "a.png") == sha(tmp_path / "b.png")
