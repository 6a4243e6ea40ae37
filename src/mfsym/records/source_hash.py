"""Which library source a job runs, and its hash.

A job's output is determined by its configuration, its inputs and the code it executes.
Snakemake's between-workflow cache hashes the first two (and the rule's script) but not the
library, so a rule that is cached passes the hash of the library code it runs as a
parameter. That code is the *import closure* of the job's entry modules: every package
module reachable from them through ``import`` statements (read from the source, wherever
they stand, so an import inside a function counts), the ``__init__`` of every package on
the way, and the compiled-kernel sources (``.c``, ``.h``) in the folders of those modules.

Hashing the closure rather than the whole package means that an edit of a module the job
never imports (a figure, the paper's text, the W2 solver of the metrics stage) leaves the
hash, and hence the job's output, alone, while an edit of anything it does import reruns it.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

#: non-Python source files that a module may build at run time (the native kernels)
KERNEL_SUFFIXES = (".c", ".h")


def _module_file(package_dir: Path, dotted: str) -> Path | None:
    """File of module ``dotted`` (relative to the package, "" for the package itself)."""
    base = package_dir.joinpath(*dotted.split(".")) if dotted else package_dir
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _parents(dotted: str) -> list[str]:
    """The package itself and every package above ``dotted``: "a.b.c" -> "", "a", "a.b"."""
    parts = dotted.split(".") if dotted else []
    return [".".join(parts[:k]) for k in range(len(parts))]


def _imported(tree: ast.AST, module: str, is_package: bool, package: str) -> set[str]:
    """Modules of ``package`` (relative dotted names) that the source ``tree`` of
    ``module`` imports, each name as written and each ``from X import name`` also as
    ``X.name`` (kept only where such a submodule exists, decided by the caller)."""
    here = module.split(".") if module else []
    if not is_package:
        here = here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = len(here) - (node.level - 1)
                if up < 0:
                    continue
                prefix = [package, *here[:up]]
                absolute = ".".join(prefix + ([node.module] if node.module else []))
            else:
                absolute = node.module or ""
            targets = [absolute]
            names = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target != package and not target.startswith(package + "."):
                continue
            relative = target[len(package) + 1:]
            found.add(relative)
            found.update(f"{relative}.{name}" if relative else name for name in names)
    return found


def import_closure(package_dir: str | Path, entries: Iterable[str]) -> list[Path]:
    """Files of the package at ``package_dir`` that the modules ``entries`` (dotted names
    relative to the package, e.g. ``"pipeline.runs"``) import, directly or not, with the
    kernel sources next to them; sorted, without repeats.

    Raises ``ValueError`` naming an entry that is not a module of the package.
    """
    package_dir = Path(package_dir).resolve()
    package = package_dir.name
    todo = []
    for entry in entries:
        if _module_file(package_dir, entry) is None:
            raise ValueError(f"{entry!r} is not a module of the package {package!r} at "
                             f"{package_dir.name}/; entries are dotted names inside it, "
                             f"such as 'pipeline.runs'")
        todo.append(entry)
    seen: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = _module_file(package_dir, module)
        if path is None:
            continue  # "from X import name" where name is not a submodule
        seen[module] = path
        todo.extend(_parents(module))
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        todo.extend(_imported(tree, module, path.name == "__init__.py", package))
    files = set(seen.values())
    for folder in {path.parent for path in seen.values()}:
        files.update(_kernel_sources(folder))
    return sorted(files)


def _kernel_sources(folder: Path) -> list[Path]:
    """Kernel sources in ``folder`` and in its subfolders that are not Python packages
    (such as ``engine/csrc``)."""
    found = []
    for item in folder.iterdir():
        if item.is_file() and item.suffix in KERNEL_SUFFIXES:
            found.append(item)
        elif item.is_dir() and not (item / "__init__.py").exists():
            found.extend(_kernel_sources(item))
    return found


def source_sha256(package_dir: str | Path, entries: Iterable[str]) -> str:
    """SHA-256 over the :func:`import_closure` of ``entries``: each file's path relative to
    the package and the SHA-256 of its bytes, in sorted order."""
    package_dir = Path(package_dir).resolve()
    h = hashlib.sha256()
    for path in import_closure(package_dir, entries):
        h.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()
