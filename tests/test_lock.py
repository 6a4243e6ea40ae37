"""requirements.lock: exact, hashed, for the CPU torch wheel, and in step with pyproject.toml."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
EXTRAS = ("test", "cluster")
#: Linux x86-64, CPython 3.11: the environment the lock is made for
MARKERS = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "python_version": "3.11", "python_full_version": "3.11.0",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "os_name": "posix"}


def digest_module():
    spec = importlib.util.spec_from_file_location("lock_digest", ROOT / "tools/lock_digest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """``{name: (version, [sha256, ...])}`` of every requirement in a pip lock file."""
    entries, name = {}, None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "--")):
            continue
        head = re.match(r"([A-Za-z0-9][A-Za-z0-9._\-]*)==(\S+)", line)
        assert head, f"not an exact pin: {line!r}"
        name = canonicalize_name(head.group(1))
        assert name not in entries, f"{name} pinned twice"
        entries[name] = (head.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return entries


def direct_requirements(project: dict) -> list[Requirement]:
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in EXTRAS:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(MARKERS)]


@pytest.fixture(scope="module")
def lock() -> dict[str, tuple[str, list[str]]]:
    return parse_lock(LOCK.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_lock_records_the_dependency_tables_it_was_made_from():
    """Any edit of pyproject.toml's dependencies, extras or Python range changes the digest:
    the lock is then out of date until tools/lock.sh is run again."""
    recorded = re.search(r"^# pyproject-dependencies-sha256: ([0-9a-f]{64})$",
                         LOCK.read_text(encoding="utf-8"), flags=re.M)
    assert recorded, "requirements.lock lacks its pyproject-dependencies-sha256 line"
    assert recorded.group(1) == digest_module().dependencies_sha256(ROOT / "pyproject.toml"), (
        "requirements.lock is out of sync with pyproject.toml: run tools/lock.sh"
    )


def test_the_digest_changes_with_any_dependency_edit(tmp_path):
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    base = digest_module().dependencies_sha256(ROOT / "pyproject.toml")
    for old, new in (('"numpy>=1.26"', '"numpy>=1.27"'), ('"ruff>=0.6"', '"ruff>=0.7"'),
                     ('">=3.11,<3.13"', '">=3.11,<3.14"')):
        assert old in text
        (tmp_path / "pyproject.toml").write_text(text.replace(old, new), encoding="utf-8")
        assert digest_module().dependencies_sha256(tmp_path / "pyproject.toml") != base, new


def test_every_entry_is_an_exact_pin_with_hashes(lock):
    assert len(lock) > 20
    for name, (version, hashes) in lock.items():
        Version(version)  # an exact, valid version
        assert hashes, f"{name}=={version} has no --hash"


def test_every_requirement_of_pyproject_is_pinned_within_its_range(lock, project):
    for req in direct_requirements(project):
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} is not in requirements.lock"
        assert req.specifier.contains(lock[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={lock[name][0]}, outside {req}"
        )


def test_torch_is_the_cpu_wheel_and_no_cuda_package_comes_in(lock):
    assert lock["torch"][0] == "2.13.0+cpu"
    assert len(lock["torch"][1]) == 1  # the one cp311 manylinux x86-64 CPU wheel
    cuda = [n for n in lock if n.startswith(("nvidia-", "triton", "cuda-"))]
    assert not cuda, f"CUDA packages in the lock: {cuda}"
    # no index in the lock: pip would try it for every package, and where that host is
    # unreachable each try waits through its retries (minutes for the whole lock)
    assert not [ln for ln in LOCK.read_text().splitlines() if ln.startswith("--")]


def test_lock_is_closed_under_the_installed_requirements(lock, project):
    """Every package the locked packages require (read from the installed metadata, for
    Linux x86-64 CPython 3.11) is itself locked."""
    todo, seen, missing = list(direct_requirements(project)), set(), []
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        if name not in lock:
            missing.append(str(req))
            continue
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            sub = Requirement(spec)
            env = [{**MARKERS, "extra": e} for e in (*req.extras, "")]
            if sub.marker is None or any(sub.marker.evaluate(m) for m in env):
                todo.append(sub)
    assert not missing, f"required but not locked: {missing}"
