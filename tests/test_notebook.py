"""notebooks/explore.ipynb runs on a tiny result set and shows what it says it shows.

The notebook is executed (nbclient, a fresh kernel) against a summary.nc written here from
known numbers; a cell appended by the test reports the redrawn panel and the experiment's
distances, which are compared with the seed means of those numbers (numpy, here) and with
the mean-field facts of the experiment: FA from an SI start stays on E^G, vanilla does not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import xarray as xr
from nbclient import NotebookClient

from mfsym.records.results import variable, write_dataset

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"
TINY = {"N": 20, "T": 1.0}
REPORT = """import json
print("REPORT " + json.dumps({
    "panel": {str(s): [float(v) for v in panel.sel(scheme=s).values] for s in panel.scheme.values},
    "N": [int(n) for n in panel.N.values],
    "order": group.order, "dim_fixed": group.dim_fixed,
    "final_dist": {r.scheme: float(result.dist_fixed[k, -1]) for k, r in enumerate(result.runs)},
}))"""


def tiny_summary() -> tuple[xr.Dataset, np.ndarray]:
    """A summary with the dims of results/summary.nc and RMD values drawn at random."""
    coords = {"init": ["SI", "WI"], "N": [10, 20, 50], "teacher": ["arbitrary", "WI", "SI"],
              "scheme": ["vanilla", "DA", "FA", "EA"], "seed": [0, 1, 2]}
    values = np.random.default_rng(0).uniform(1e-3, 1.0, [len(v) for v in coords.values()])
    values[:, :, :, 3] = 0.0  # EA: exactly on E^G
    ds = xr.Dataset({"rmd_projected": variable(tuple(coords), values,
                                               "RMD to the projection on E^G")},
                    coords=coords)
    return ds, values


def test_notebook_is_stored_clean():
    text = NOTEBOOK.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id
    assert not re.search(r"(/work/|/home/|/root/|/tmp/|[A-Z]:\\\\)", text)


def test_notebook_runs_on_a_tiny_result_set(tmp_path):
    ds, values = tiny_summary()
    write_dataset(ds, tmp_path / "results" / "summary.nc", {"results_dir": "results"},
                  "tiny summary for the notebook test")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for key, value in TINY.items():
        params.source, count = re.subn(rf"^{key} = .*$", f"{key} = {value!r}", params.source,
                                       flags=re.M)
        assert count == 1, key
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    (tmp_path / "notebooks").mkdir()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path / "notebooks")}}).execute()
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    report = json.loads(out.split("REPORT ", 1)[1])
    # the panel: SI start, WI teacher, seed mean, clipped at the floor for the log axis
    expected = values[0, :, 1].mean(axis=-1)  # (N, scheme)
    for s, scheme in enumerate(ds["scheme"].values):
        np.testing.assert_allclose(report["panel"][scheme], np.maximum(expected[:, s], 1e-6))
    assert report["N"] == [10, 20, 50]
    # D4 = ⟨90° rotation, swap⟩ has 8 elements; E^G = {(0, v)} has dimension 2
    assert (report["order"], report["dim_fixed"]) == (8, 2)
    assert report["final_dist"]["FA"] < 1e-6 < report["final_dist"]["vanilla"]
