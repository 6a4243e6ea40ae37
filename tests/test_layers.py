"""The library's layering: a module never imports a module of a higher layer.

Every import of every module under ``src/mfsym`` is read with :mod:`ast` (relative imports
resolved against the module's package, imports inside functions included), mapped to the
layer folder it lands in, and compared with the importer's layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mfsym"

#: Layer folders, lowest first (ARCHITECTURE.md; pipeline wires every other layer, and the
#: command line is a thin layer over it).
LAYERS = ("records", "core", "engine", "measure", "studies", "figures", "paper", "pipeline",
          "cli")
RANK = {name: i for i, name in enumerate(LAYERS)}
#: Libraries the science never depends on.
FORBIDDEN = ("snakemake",)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``src/mfsym/engine/training.py`` → ``mfsym.engine.training``."""
    rel = path.relative_to(package.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """``(line, absolute dotted name)`` of every import in the file at ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, package).split(".")
    base = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import mod` may name a submodule: record pkg.mod for each name
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return out


def layer_of(dotted: str) -> str | None:
    """The layer folder of a dotted ``mfsym.<layer>...`` name (None outside the layers)."""
    parts = dotted.split(".")
    if parts[0] != "mfsym" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def violations(package: Path = PACKAGE) -> list[str]:
    """``file:line imports name (layer a imports higher layer b)`` for every bad import."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path == package / "__init__.py":  # the public API may gather every layer
            continue
        own = layer_of(module_name(path, package))
        where = path.relative_to(package.parent)
        for line, name in imported_modules(path, package):
            if name.split(".")[0] in FORBIDDEN:
                found.append(f"{where}:{line} imports {name} (the library never imports it)")
                continue
            other = layer_of(name)
            if own and other and RANK[other] > RANK[own]:
                found.append(f"{where}:{line} imports {name} "
                             f"(layer {own} imports higher layer {other})")
    return found


def test_every_module_lives_in_a_layer():
    stray = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not stray, f"modules outside the layer folders: {stray}"
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(LAYERS), f"layer folders {sorted(folders)} != {sorted(LAYERS)}"


def test_no_layer_imports_a_higher_one():
    assert violations() == []


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("core", "from ..engine.training import train_stack\n", "core imports higher layer engine"),
        ("measure", "def f():\n    from mfsym.pipeline import config\n",
         "measure imports higher layer pipeline"),
        ("studies", "from .. import figures\n", "studies imports higher layer figures"),
        ("records", "import snakemake\n", "never imports it"),
    ],
)
def test_a_wrong_import_is_named(tmp_path, layer, source, expected):
    """The check itself: a planted upward import is reported with its file and line."""
    pkg = tmp_path / "mfsym"
    for name in LAYERS:
        (pkg / name).mkdir(parents=True)
        (pkg / name / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / layer / "bad.py").write_text(source)
    (pkg / "pipeline" / "fine.py").write_text("from ..engine.training import train_stack\n")
    found = violations(pkg)
    assert len(found) == 1
    assert found[0].startswith(f"mfsym/{layer}/bad.py:") and expected in found[0]


def test_public_api_names_resolve_lazily():
    """Every public name resolves; importing the records layer alone loads no torch."""
    import subprocess
    import sys

    code = ("import sys, mfsym.records.results; assert 'torch' not in sys.modules; "
            "import mfsym; [getattr(mfsym, n) for n in mfsym.__all__]; "
            "assert mfsym.train_stack.__module__ == 'mfsym.engine.training'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
