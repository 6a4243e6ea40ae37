"""Result files carry their checksum and configuration; readers verify both before use."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mfsym.records.atomic import ChecksumError, WriteError, atomic_path, checksum_path
from mfsym.records.lineage import RUNS, ConfigMismatchError, config_differences
from mfsym.records.results import read_dataset, variable, write_dataset

CONFIG = {
    "group": {"name": "C2", "dim": 2},
    "training": {"alpha": 50.0, "tau": 1e-4},
    "figures": {"dpi": 150, "style": "whitegrid"},
    "heuristic": {
        "N": 20,
        "resources": {"threads": 1},
        "settings": [{"name": "a", "teacher": "WI"}, {"name": "b", "teacher": "SI"}],
    },
}


def _dataset(n=20000):
    rng = np.random.default_rng(0)
    return xr.Dataset({"x": variable(("i",), rng.standard_normal(n), "a random sample")})


def _read_in_subprocess(path) -> dict:
    """Read ``path`` in a child process, so that a parser stuck on bad bytes is killed by the
    timeout (and fails the test) instead of hanging the test session."""
    code = textwrap.dedent(f"""
        import json, time
        from mfsym.records.results import read_dataset
        start = time.perf_counter()
        try:
            read_dataset({str(path)!r})
            out = {{"error": None}}
        except Exception as exc:
            out = {{"error": type(exc).__name__, "message": str(exc)}}
        out["seconds"] = time.perf_counter() - start
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("damage", ["garble", "truncate", "drop_sidecar"])
def test_damaged_dataset_is_refused_at_once_naming_the_file(tmp_path, damage):
    path = write_dataset(_dataset(), tmp_path / "eval_sample.nc", CONFIG, "sample")
    data = bytearray(path.read_bytes())
    if damage == "garble":
        mid = len(data) // 2
        data[mid:mid + 8] = bytes(8 * [0xA5])
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        checksum_path(path).unlink()
    out = _read_in_subprocess(path)
    assert out["error"] == "ChecksumError"
    assert str(path) in out["message"]
    assert out["seconds"] < 1.0


def test_intact_dataset_reads_back_with_its_provenance(tmp_path):
    ds = _dataset()
    path = write_dataset(ds, tmp_path / "ok.nc", CONFIG, "sample")
    back = read_dataset(path, CONFIG, RUNS)
    np.testing.assert_array_equal(back["x"].values, ds["x"].values)
    assert json.loads(back.attrs["config_json"])["training"]["alpha"] == 50.0


def test_reader_raises_the_checksum_error_class(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "gone.nc", CONFIG, "sample")
    checksum_path(path).unlink()
    with pytest.raises(ChecksumError, match="gone.nc"):
        read_dataset(path)


def test_file_from_another_configuration_is_refused_naming_keys(tmp_path):
    trained = {**CONFIG, "training": {**CONFIG["training"], "alpha": 1e6}}
    path = write_dataset(_dataset(), tmp_path / "runs.nc", trained, "runs")
    with pytest.raises(ConfigMismatchError) as info:
        read_dataset(path, CONFIG, RUNS)
    message = str(info.value)
    assert str(path) in message
    assert "training.alpha: file has 1000000.0, config has 50.0" in message
    assert info.value.differences == [("training.alpha", 1e6, 50.0)]


def test_difference_outside_the_scope_is_accepted(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "runs.nc", CONFIG, "runs")
    restyled = {**CONFIG, "figures": {"dpi": 600, "style": "ticks"}}
    read_dataset(path, restyled, RUNS)


def test_scope_paths_exclusions_and_named_lists():
    other = json.loads(json.dumps(CONFIG))
    other["heuristic"]["resources"]["threads"] = 8
    other["heuristic"]["settings"][1]["teacher"] = "WI"
    other["heuristic"]["settings"].reverse()
    scope_a = ("heuristic", "!heuristic.resources", "!heuristic.settings", "heuristic.settings.a")
    assert config_differences(CONFIG, other, scope_a) == []
    assert config_differences(CONFIG, other, ("heuristic", "!heuristic.resources")) == [
        ("heuristic.settings.b.teacher", "SI", "WI")
    ]
    added = {**CONFIG, "training": {**CONFIG["training"], "beta": 1e-6}}
    assert config_differences(CONFIG, added, ("training.beta",)) == [
        ("training.beta", "<absent>", 1e-6)
    ]


def test_file_without_recorded_configuration_is_refused(tmp_path):
    path = tmp_path / "bare.nc"
    with atomic_path(path, suffix=".nc") as tmp:  # checksummed, but no provenance
        _dataset().to_netcdf(tmp, engine="netcdf4")
    read_dataset(path)
    with pytest.raises(ConfigMismatchError, match="bare.nc"):
        read_dataset(path, CONFIG, RUNS)


def _can_mount() -> str | None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return "mounting a small tmpfs needs root and mount(8)"
    return None


def test_full_disk_is_reported_as_such_and_leaves_nothing(tmp_path):
    reason = _can_mount()
    if reason:
        pytest.skip(reason)
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        dest = mnt / "results" / "big.nc"
        with pytest.raises(WriteError) as info:
            write_dataset(_dataset(400_000), dest, CONFIG, "too big for the disk")
        assert str(dest) in str(info.value)
        assert "no space left on device" in str(info.value)
        assert info.value.errno == errno.ENOSPC
        assert info.value.filename == str(dest)
        assert [p.name for p in Path(dest.parent).iterdir()] == []
    finally:
        # Lazy: HDF5 keeps its handle on the failed (already removed) file until the
        # process ends, so the mount stays busy until then.
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)
