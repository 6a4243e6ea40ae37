"""The folders the pipeline writes to or wipes, checked before any job.

``results_dir`` receives every result and ``paper.build_dir`` is wiped at every manuscript
build, so neither may be the checkout, a folder above it, one of its source folders
(:data:`SOURCE_FOLDERS`) or inside one, nor hold a file git tracks; the build folder must
also be a folder of its own, apart from ``results_dir``, that an earlier build made (or
none yet).  :func:`path_problems` reports each problem as one line naming the key, the
value and what is allowed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..records.staging import staging_refusal

#: Folders of the repository holding its sources; no output folder may be, hold or lie in one.
SOURCE_FOLDERS = ("src", "paper", "workflow", "config", "tests", "profiles", "benchmarks",
                  ".git")
_RESULTS_ALLOWED = (
    "a folder of its own (e.g. 'results'), inside the repository or elsewhere, that is not "
    "the repository root or a folder above it, not a source folder ("
    + ", ".join(SOURCE_FOLDERS) + ") or inside one, and holds no file tracked by git"
)
_BUILD_ALLOWED = (
    "a staging folder of its own that the paper build creates and wipes (e.g. "
    "'paper/build'): not the repository root or a folder above it, not a source folder ("
    + ", ".join(SOURCE_FOLDERS) + ") or inside one other than paper, not results_dir, inside "
    "it or around it, holding no file tracked by git, and either absent, empty or made by "
    "an earlier paper build"
)


def _folder(value, workdir: Path) -> Path:
    """The folder Snakemake writes to for ``value``: the string as it is (no ``~``
    expansion, as in Snakemake), relative to ``workdir``."""
    path = Path(str(value))
    return (path if path.is_absolute() else workdir / path).resolve()


def _tilde_problem(value) -> str | None:
    if str(value).startswith("~"):
        return ("starts with '~', which Snakemake does not expand (it would write into a "
                "folder literally named '~' under the working directory); give the full "
                "path")
    return None


def _holds_tracked_files(folder: Path, root: Path) -> bool:
    """Whether git tracks a file inside ``folder`` (False outside a git checkout)."""
    if not folder.is_relative_to(root):
        return False
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--", folder.relative_to(root).as_posix()],
            capture_output=True, check=False, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and bool(out.stdout)


def _folder_problem(folder: Path, root: Path, inside_ok: Sequence[str] = ()) -> str | None:
    """Why ``folder`` cannot receive outputs: the checkout, its sources or tracked files."""
    if root.is_relative_to(folder):
        return "is the repository root or a folder above it"
    for name in SOURCE_FOLDERS:
        source = root / name
        if folder == source:
            return f"is the source folder {name!r}"
        if folder.is_relative_to(source) and name not in inside_ok:
            return f"lies inside the source folder {name!r}"
    if _holds_tracked_files(folder, root):
        return "holds files tracked by git"
    return None


def path_problems(config: Mapping, schema: Mapping, root, workdir=None) -> list[str]:
    """Problems of ``results_dir`` and ``paper.build_dir`` (relative to ``workdir``, by
    default the repository ``root``): one line each, naming the key, the value and what is
    allowed. ``paper.build_dir`` is wiped at every manuscript build, so only a folder of its
    own, which the build made, passes."""
    root = Path(root).resolve()
    workdir = root if workdir is None else Path(workdir).resolve()
    problems = []
    results_value = config["results_dir"]
    results = _folder(results_value, workdir)
    why = _tilde_problem(results_value) or _folder_problem(results, root)
    if why:
        problems.append(f"results_dir = {results_value!r} {why}; allowed: {_RESULTS_ALLOWED}")
    default = schema["properties"]["paper"]["properties"]["build_dir"]["default"]
    build_value = config.get("paper", {}).get("build_dir", default)
    build = _folder(build_value, workdir)
    why = _tilde_problem(build_value) or _folder_problem(build, root, inside_ok=("paper",))
    if why is None and (build.is_relative_to(results) or results.is_relative_to(build)):
        why = f"is results_dir ({results_value!r}), lies inside it or holds it"
    if why is None:
        why = staging_refusal(build)
    if why:
        problems.append(f"paper.build_dir = {build_value!r} {why}; allowed: {_BUILD_ALLOWED}")
    return problems
