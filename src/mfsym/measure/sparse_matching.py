"""Minimum-weight perfect matching on a sparse bipartite graph, in a killable process.

``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` (LAPJVsp) is fast on the
candidate graphs of :mod:`mfsym.measure.assignment`, but on some inputs (many tied
reduced costs) it never returns and cannot be interrupted from Python.  It therefore runs
in a child interpreter (``python -m mfsym.measure.sparse_matching``), fed the CSR arrays
on stdin and answering the matched column of every row on stdout; past ``timeout``
seconds the child is killed and ``None`` is returned, so the caller can answer with the
dense solver instead.
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np


def match(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, m: int,
          timeout: float) -> np.ndarray | None:
    """Column matched to each of the m rows of the CSR graph, or None on timeout/failure."""
    buf = io.BytesIO()
    np.savez(buf, data=data, indices=indices, indptr=indptr, m=np.int64(m))
    try:
        proc = subprocess.run([sys.executable, "-m", __name__], input=buf.getvalue(),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    cols = np.load(io.BytesIO(proc.stdout))
    return cols if cols.shape == (m,) else None


def _serve() -> None:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    arrays = np.load(io.BytesIO(sys.stdin.buffer.read()))
    m = int(arrays["m"])
    graph = csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=(m, m))
    rows, cols = min_weight_full_bipartite_matching(graph)
    out = np.empty(m, dtype=np.int64)
    out[rows] = cols
    buf = io.BytesIO()
    np.save(buf, out)
    sys.stdout.buffer.write(buf.getvalue())


if __name__ == "__main__":
    _serve()
