"""Print the SHA-256 of pyproject.toml's dependency tables (requires-python, dependencies,
optional-dependencies) as canonical JSON: the value requirements.lock records, so a test can
tell when the lock no longer matches pyproject.toml."""

import hashlib
import json
import sys
import tomllib
from pathlib import Path

KEYS = ("requires-python", "dependencies", "optional-dependencies")


def dependencies_sha256(pyproject: Path) -> str:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    tables = {key: project.get(key) for key in KEYS}
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print(dependencies_sha256(root / "pyproject.toml"))
