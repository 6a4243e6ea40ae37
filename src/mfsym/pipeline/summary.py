"""Aggregation of the per-job metrics into ``results/summary.nc``.

Dimensions: ``init``, ``N``, ``teacher``, ``scheme``, ``seed``, ``pair`` (scheme pairs
"A-B") and ``time`` (nominal mean-field snapshot times).  Variables:

* ``rmd_projected``, ``rmd_symmetrized``, ``population_risk`` (init, N, teacher, scheme, seed);
* ``rmd_between`` (init, N, teacher, pair, seed);
* when every metrics block has them: ``l2_between`` (init, N, teacher, pair, seed), the
  L²(π) distance between the trained models of two schemes, and ``rmd_baseline``,
  ``l2_baseline`` (init, N, teacher, seed), the same distances between a run of the
  baseline scheme and its twin with a random stream of its own (the finite-N floor);
* ``risk_curve``, ``train_loss_curve``, ``rmd_projected_curve``
  (init, N, teacher, scheme, seed, time);
* ``training_backend``, ``training_dtype``, ``training_device`` (init, N, seed): strings,
  what trained each cell (jobs of one (init, N) may differ); the distinct values are also
  the dataset attributes of the same names, joined by " | "; the attributes ``coupling``
  and ``baseline`` likewise, where the blocks record them.

Every cell must be filled by exactly one job; a missing or duplicated cell is an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from ..records import lineage
from ..records.results import read_dataset, variable, write_dataset
from ..records.trained_by import TRAINED_BY, distinct

PER_RUN = ("rmd_projected", "rmd_symmetrized", "population_risk")
PER_PAIR = ("rmd_between", "l2_between")
PER_SEED = ("rmd_baseline", "l2_baseline")
CURVES = ("risk_curve", "train_loss_curve", "rmd_projected_curve")
#: Variables aggregated only when every block holds them (a grid without a baseline or
#: without the evaluation sample at its metrics jobs).
OPTIONAL = ("l2_between", "rmd_baseline", "l2_baseline")
#: Block attributes collected, when present, into the summary's attributes.
OPTIONAL_ATTRS = ("coupling", "baseline")


DIMS = {
    **{name: ("init", "N", "teacher", "scheme", "seed") for name in PER_RUN},
    **{name: ("init", "N", "teacher", "pair", "seed") for name in PER_PAIR},
    **{name: ("init", "N", "teacher", "seed") for name in PER_SEED},
    **{name: ("init", "N", "teacher", "scheme", "seed", "time") for name in CURVES},
}


#: summary variable → the attribute of a metrics block it records
RECORDED = {"training_backend": "backend", "training_dtype": "dtype",
            "training_device": "device"}


def _recorded(blocks: Sequence[xr.Dataset], inits, n_values, seeds) -> dict:
    """The :data:`RECORDED` string variables ``(init, N, seed)`` and their attributes."""
    cell = {(b.attrs["init"], int(b.attrs["N"]), int(s)): b
            for b in blocks for s in b["seed"].values}
    out, attrs = {}, {}
    for name, key in RECORDED.items():
        for b in blocks:
            if key not in b.attrs:
                raise ValueError(f"the metrics block init={b.attrs['init']}, N={b.attrs['N']} "
                                 f"does not record the training {key}")
        values = np.array([[[str(cell[(i, int(n), int(s))].attrs[key]) for s in seeds]
                            for n in n_values] for i in inits])
        out[name] = variable(("init", "N", "seed"), values, TRAINED_BY[key])
        attrs[name] = distinct(values)
    return out, attrs


def _check_cover(blocks: Sequence[xr.Dataset], inits, n_values, seeds) -> None:
    """Every (init, N, seed) of the grid is in exactly one block, and nothing else is."""
    cells = Counter(
        (b.attrs["init"], int(b.attrs["N"]), int(s)) for b in blocks for s in b["seed"].values
    )
    expected = {(i, int(n), int(s)) for i in inits for n in n_values for s in seeds}
    problems = [f"(init, N, seed) = {c} appears in {k} blocks" for c, k in cells.items() if k > 1]
    problems += [f"(init, N, seed) = {c} is missing" for c in sorted(expected - set(cells))]
    problems += [f"(init, N, seed) = {c} is not in the grid" for c in sorted(set(cells) - expected)]
    if problems:
        raise ValueError("the metrics blocks do not cover the grid once: " + "; ".join(problems))


def _label(block: xr.Dataset, k: int) -> str:
    """The file a block was read from, else its position (for error messages)."""
    return str(block.encoding.get("source") or f"block {k}")


def _check_times(blocks: Sequence[xr.Dataset]) -> None:
    """Every block has the same finite ``time`` coordinate (the nominal snapshot times)."""
    ref = np.asarray(blocks[0]["time"].values)
    for k, b in enumerate(blocks):
        t = np.asarray(b["time"].values)
        if not (np.issubdtype(t.dtype, np.number) and np.all(np.isfinite(t))):
            raise ValueError(f"the time coordinate of {_label(b, k)} is not finite numbers: "
                             f"{t.tolist()}")
        if t.shape != ref.shape or not np.array_equal(t, ref):
            raise ValueError(
                f"the time coordinates of {_label(b, k)} and {_label(blocks[0], 0)} differ: "
                f"{t.tolist()} vs {ref.tolist()}; every block must share the snapshot times"
            )


def _plain(value):
    """A coordinate value as a plain Python object (strings read back from netCDF are
    already ``str``, numeric values are numpy scalars)."""
    return value.item() if isinstance(value, np.generic) else value


def aggregate(
    blocks: Sequence[xr.Dataset],
    inits: Sequence[str],
    n_values: Sequence[int],
    teachers: Sequence[str],
    schemes: Sequence[str],
    seeds: Sequence[int],
    pairs: Sequence[str],
) -> xr.Dataset:
    """Merge the metrics blocks (one (init, N) and a block of seeds each) into the summary.

    The coordinates follow the given orders (N and seeds sorted); a cell of the grid that no
    block fills, or fills twice, is an error.
    """
    if not blocks:
        raise ValueError("no metrics to aggregate")
    _check_cover(blocks, inits, n_values, seeds)
    _check_times(blocks)
    present = {name: d for name, d in DIMS.items()
               if name not in OPTIONAL or all(name in b.data_vars for b in blocks)}
    parts = [
        b[list(present)].expand_dims(init=[b.attrs["init"]], N=[int(b.attrs["N"])]) for b in blocks
    ]
    merged = xr.merge(parts, join="outer", compat="no_conflicts", combine_attrs="drop")
    merged = merged.reindex(
        init=list(inits), N=sorted(int(n) for n in n_values), teacher=list(teachers),
        scheme=list(schemes), seed=sorted(int(s) for s in seeds), pair=list(pairs),
    )
    out = {}
    for name, dims in present.items():
        values = merged[name].transpose(*dims).values
        if np.isnan(values).any():
            bad = dict(zip(dims, np.argwhere(np.isnan(values))[0], strict=True))
            where = {d: _plain(merged[d].values[i]) for d, i in bad.items()}
            raise ValueError(f"{name} has no value at {where}: a block lacks this teacher, "
                             "scheme or pair")
        attrs = blocks[0][name].attrs
        out[name] = variable(dims, values, attrs["long_name"], attrs["units"])
    recorded, attrs = _recorded(blocks, merged["init"].values, merged["N"].values,
                                merged["seed"].values)
    for key in OPTIONAL_ATTRS:
        values = sorted({str(b.attrs[key]) for b in blocks if key in b.attrs})
        if values:
            attrs[key] = " | ".join(values)
    return xr.Dataset({**out, **recorded}, attrs=attrs,
                      coords={d: merged[d] for d in ("init", "N", "teacher", "scheme", "seed",
                                                     "pair", "time")})


def summary_job(
    metric_paths: Sequence, output, config: Mapping, grid: Mapping
) -> None:
    """Aggregate the metrics files into ``output`` (``grid``: inits, N, teachers, schemes,
    seeds, pairs); a metrics file written under another configuration (where it determines
    the file, :data:`mfsym.records.lineage.METRICS`) is refused."""
    blocks = [read_dataset(p, config, lineage.METRICS) for p in metric_paths]
    ds = aggregate(
        blocks, grid["inits"], grid["N"], grid["teachers"], grid["schemes"], grid["seeds"],
        grid["pairs"],
    )
    write_dataset(ds, output, config, "Symmetries in overparametrised networks: summary")
