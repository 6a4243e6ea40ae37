"""The README's "Use the engine from Python" example runs as printed and says what it claims."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use the engine from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert len(blocks) == 1, "the section holds exactly one Python example"
    return blocks[0]


def test_readme_example_runs_and_fa_stays_on_the_fixed_subspace(tmp_path):
    """Run from an empty folder (no repository on the path): vanilla leaves E^G by
    finite-N fluctuations, FA stays on it to rounding, and both fit the WI teacher."""
    out = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    found = re.findall(r"^(\w+)\s+risk (\S+)\s+RMD to E\^G (\S+)$", out, flags=re.M)
    rows = {scheme: (float(risk), float(dist)) for scheme, risk, dist in found}
    assert set(rows) == {"vanilla", "FA"}, out
    assert rows["FA"][1] < 1e-12
    assert 1e-4 < rows["vanilla"][1] < 0.1
    assert max(rows["vanilla"][0], rows["FA"][0]) < 1e-3
