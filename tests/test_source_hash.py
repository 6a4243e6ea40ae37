"""The hash of the code a job runs: the import closure of its entry modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mfsym
from mfsym.pipeline.runs import TRAINING_ENTRIES, training_source_sha256
from mfsym.records.source_hash import import_closure, source_sha256

PACKAGE = Path(mfsym.__file__).resolve().parent


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def toy(tmp_path):
    """A package ``toy`` with every kind of import the closure must follow, and modules
    that nothing imports."""
    root = tmp_path / "toy"
    _write(root, {
        "__init__.py": "",
        "entry.py": "from .helpers import f\nfrom . import sub\n"
                    "def late():\n    import toy.lazy\n    from toy.deep.leaf import g\n",
        "helpers.py": "import os\nfrom .sub.inner import h\n",
        "lazy.py": "x = 1\n",
        "sub/__init__.py": "from .. import helpers\n",
        "sub/inner.py": "def h():\n    pass\n",
        "sub/csrc/kernel.c": "int k(void) { return 0; }\n",
        "deep/__init__.py": "",
        "deep/leaf.py": "from ..helpers import f as g\n",
        "unused.py": "from .entry import late\n",
        "other/__init__.py": "",
        "other/csrc/other_kernel.c": "int o(void) { return 1; }\n",
    })
    return root


def test_closure_follows_relative_absolute_late_and_package_imports(toy):
    got = {p.relative_to(toy).as_posix() for p in import_closure(toy, ["entry"])}
    assert got == {"__init__.py", "entry.py", "helpers.py", "lazy.py", "sub/__init__.py",
                   "sub/inner.py", "sub/csrc/kernel.c", "deep/__init__.py", "deep/leaf.py"}


def test_hash_moves_with_imported_code_only(toy):
    before = source_sha256(toy, ["entry"])
    (toy / "unused.py").write_text("changed = True\n")
    (toy / "other" / "csrc" / "other_kernel.c").write_text("int o(void) { return 2; }\n")
    assert source_sha256(toy, ["entry"]) == before
    for name in ("deep/leaf.py", "sub/csrc/kernel.c"):
        path = toy / name
        original = path.read_text()
        path.write_text(original + "\n# edited\n")
        assert source_sha256(toy, ["entry"]) != before, name
        path.write_text(original)
        assert source_sha256(toy, ["entry"]) == before


def test_unknown_entry_is_refused(toy):
    with pytest.raises(ValueError, match="'nowhere' is not a module of the package 'toy'"):
        import_closure(toy, ["entry", "nowhere"])


def test_training_closure_holds_the_engine_and_not_the_readers():
    files = {p.relative_to(PACKAGE).as_posix() for p in import_closure(PACKAGE, TRAINING_ENTRIES)}
    for needed in ("engine/training.py", "engine/csrc/mfsym_kernel.c", "core/units.py",
                   "core/schemes.py", "records/results.py", "pipeline/runs.py"):
        assert needed in files, needed
    for folder in ("figures/", "paper/", "measure/", "studies/"):
        assert not [f for f in files if f.startswith(folder)], folder
    assert "records/stage_times.py" not in files
    assert len(training_source_sha256()) == 64


def test_training_closure_covers_every_module_a_training_job_loads():
    """Independent check: import the train script's entry modules in a fresh interpreter
    and list the package modules Python actually loaded; each must be hashed."""
    code = (
        "import json, sys\n"
        + "".join(f"import mfsym.{entry}\n" for entry in TRAINING_ENTRIES)
        + "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()\n"
          "    if n == 'mfsym' or n.startswith('mfsym.'))))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                       capture_output=True, text=True).stdout)
    hashed = set(import_closure(PACKAGE, TRAINING_ENTRIES))
    missing = [f for f in loaded if Path(f).resolve() not in hashed]
    assert not missing
    assert len(loaded) >= 15
