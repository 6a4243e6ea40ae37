"""The ``mfsym`` command line: one run end to end, provenance, help, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import yaml

from mfsym.cli import main
from mfsym.records.results import read_dataset

ROOT = Path(__file__).resolve().parents[1]
#: E^G of the D4 example by hand: u = 0 (no fixed vector of the rotation), v free.
D4_PROJECTOR = np.diag([0.0, 0.0, 1.0, 1.0])
TINY = ["--n", "20", "--T", "0.5", "--quiet"]


@pytest.fixture()
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def one_line_error(capsys, code: int, status: int) -> str:
    err = capsys.readouterr().err
    assert code == status, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_console_script_is_declared():
    from mfsym.cli.train import TEACHERS
    from mfsym.core.teachers import TEACHER_KINDS

    assert TEACHERS == tuple(TEACHER_KINDS)
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["mfsym"]
    module, func = target.split(":")
    assert getattr(import_module(module), func) is main


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["info", "--help"]])
def test_help_works_for_every_subcommand(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 0
    assert "usage: mfsym" in capsys.readouterr().out


def test_module_entry_runs():
    res = subprocess.run([sys.executable, "-m", "mfsym.cli", "info", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "usage: mfsym info" in res.stdout


@pytest.mark.parametrize("argv,needle", [
    (["train", "--scheme", "FA", "--n", "0"], "argument --n: '0' is not an integer ≥ 1"),
    (["train", "--scheme", "XX", "--n", "5"], "argument --scheme: invalid choice: 'XX'"),
    (["train", "--scheme", "FA"], "the following arguments are required: --n"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_bad_arguments_get_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert needle in one_line_error(capsys, stop.value.code, 2)


def test_bad_configuration_gets_one_line(tmp_path, at_root, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"group": {"name": "generated", "dim": 2, "generators": [
        {"x": [[1, 1], [0, 1]]}]}, "unit": {"name": "uv", "activation": "sigmoid"}}))
    err = one_line_error(capsys, main(["train", "--config", str(bad), "--scheme", "FA", *TINY]),
                         1)
    assert "generator 0 on X is not orthogonal" in err
    err = one_line_error(capsys, main(["train", "--config", str(tmp_path / "none.yaml"),
                                       "--scheme", "FA", *TINY]), 1)
    assert "no such file" in err


def test_train_writes_a_run_file_and_info_verifies_it(tmp_path, at_root, capsys):
    out = tmp_path / "d4.nc"
    code = main(["train", "--config", "config/examples/d4.yaml", "--scheme", "FA", "--seed",
                 "1", "--out", str(out), *TINY])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "|G| = 8, D = 4, dim E^G = 2" in printed and "RMD(nu, P_E#nu) = " in printed
    ds = read_dataset(out)  # checksum verified
    final = ds["final_particles"].sel(teacher="WI", scheme="FA", seed=1).values
    assert np.abs(final - final @ D4_PROJECTOR).max() < 1e-6  # FA from SI stays on E^G
    assert ds.attrs["N"] == 20 and "FA" in ds.attrs["title"]

    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "checksum OK" in shown and "matches its recorded config_sha256" in shown
    assert '"label": "D4"' in shown and "git_commit:" in shown

    out.write_bytes(out.read_bytes()[:-8] + b"\0" * 8)
    assert "sha256" in one_line_error(capsys, main(["info", str(out)]), 1).lower()
