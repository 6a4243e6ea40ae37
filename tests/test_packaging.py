"""Packaging contracts: the README's commands, the CI entry point, the conda environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
# every dependency exactly as requirements.lock pins and hashes it, then this package alone
INSTALL_LOCK = (
    "python3 -m pip install -r requirements.lock && python3 -m pip install --no-deps -e ."
)
RUN_COMMAND = f"{INSTALL_LOCK} && snakemake"
TEST_COMMAND = f"{INSTALL_LOCK} && python3 -m pytest -n 2"
CI_APT_PACKAGES = (
    "munge slurm-wlm slurmctld slurmd slurm-client latexmk texlive-latex-base "
    "texlive-latex-recommended texlive-fonts-recommended lmodern poppler-utils"
).split()
LINTED = ("src", "tests", "benchmarks", "workflow/scripts")


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads(read("pyproject.toml"))


@pytest.fixture(scope="module")
def ci_script() -> str:
    return read(".ci/run")


@pytest.fixture(scope="module")
def environment() -> dict:
    return yaml.safe_load(read("environment.yml"))


# ---- README ------------------------------------------------------------------------------------
def code_lines(markdown: str) -> list[str]:
    """The lines inside fenced code blocks."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", markdown, flags=re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines()]


def test_readme_quick_start_has_exactly_the_two_commands():
    readme = read("README.md")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert code_lines(quick) == [RUN_COMMAND, TEST_COMMAND]


def test_readme_names_the_results_and_the_ways_to_run():
    readme = read("README.md")
    for phrase in (
        "results/summary.nc",
        "results/heuristic.nc",
        "results/figures/",
        "results/runs/",
        "snakemake --configfile config/paper.yaml",
        "--profile profiles/slurm",
        "training.device: auto",
    ):
        assert phrase in readme, phrase


def test_pyproject_names_the_readme_and_the_test_tools(pyproject):
    assert (ROOT / pyproject["project"]["readme"]).is_file()
    extras = pyproject["project"]["optional-dependencies"]
    test_extra = {Requirement(r).name for r in extras["test"]}
    # `pytest -n 2` needs xdist; the property tests need hypothesis
    assert {"pytest", "pytest-xdist", "hypothesis"} <= test_extra
    assert "cluster" in extras


def test_pytest_markers_are_registered(pyproject):
    opts = pyproject["tool"]["pytest"]["ini_options"]
    names = {m.split(":", 1)[0] for m in opts["markers"]}
    assert {"slow", "slurm", "latex"} <= names
    assert "--strict-markers" in opts["addopts"]
    # xdist_group keeps tests that share a pipeline run on one worker only under loadgroup
    assert "--dist loadgroup" in opts["addopts"]


# ---- the CI entry point ----------------------------------------------------------------------
def test_ci_script_runs_the_readme_test_command_verbatim(ci_script):
    assert TEST_COMMAND in read("README.md")
    assert TEST_COMMAND in ci_script.splitlines()


def test_ci_script_is_strict_executable_bash(ci_script):
    path = ROOT / ".ci" / "run"
    assert os.access(path, os.X_OK), ".ci/run must be executable"
    lines = ci_script.splitlines()
    assert lines[0] in ("#!/usr/bin/env bash", "#!/bin/bash")
    assert "set -euo pipefail" in [line.strip() for line in lines]
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(path)], check=True)


def test_ci_script_installs_the_system_packages_first(ci_script):
    match = re.search(r'^APT_PACKAGES="([^"]*)"', ci_script, flags=re.M)
    assert match, "the package list lives in one APT_PACKAGES variable"
    assert set(CI_APT_PACKAGES) <= set(match.group(1).split())
    update = ci_script.index("apt-get update")
    install = ci_script.index("apt-get install -y")
    assert update < install < ci_script.index(TEST_COMMAND)
    assert "$APT_PACKAGES" in ci_script[install:].splitlines()[0]
    assert "DEBIAN_FRONTEND=noninteractive" in ci_script


# ---- conda environment -------------------------------------------------------------------------
def test_environment_yml_pins_the_python_the_package_supports(environment, pyproject):
    deps = environment["dependencies"]
    pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert len(pythons) == 1
    version = pythons[0].split("=", 1)[1]
    assert version == "3.11"
    assert version in SpecifierSet(pyproject["project"]["requires-python"])
    assert f"Python {version}" in read("README.md")


def test_environment_yml_installs_this_package_with_pip(environment):
    deps = environment["dependencies"]
    assert "pip" in deps
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    editable = [line for line in pip_sections[0] if re.fullmatch(r"-e \.(\[[a-z,]+\])?", line)]
    assert editable and "cluster" in editable[0]


def test_running_python_is_supported(pyproject):
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert here in SpecifierSet(pyproject["project"]["requires-python"])


# ---- lint ------------------------------------------------------------------------------------
def test_ruff_is_clean():
    """`ruff check src tests benchmarks workflow/scripts` (the folders that exist)."""
    pytest.importorskip("ruff")
    paths = [p for p in LINTED if (ROOT / p).exists()]
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
