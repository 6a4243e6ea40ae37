"""The one results schema: xarray datasets in netCDF with CF attributes and provenance.

Every dataset the project writes goes through :func:`write_dataset`, which

* checks that every data variable carries ``long_name`` and ``units``,
* refuses non-finite values in variables marked as results (divergence is reported by the
  engine, never written),
* stamps the global attributes: ``Conventions`` (CF-1.10), ``title``, ``institution``,
  ``source``, ``history``, the full configuration as sorted JSON (``config_json``) and its
  SHA-256 (``config_sha256``), the git commit (``git_commit``), package versions and the
  SHA-256 of the dependency lock (``lock_sha256``),
* carries no wall-clock value, so rebuilding a configuration gives the same bytes: the
  date in ``history`` is the source date (:func:`source_date`), and netCDF-C writes no
  HDF5 object times,
* writes atomically: a temporary file in the destination folder, then ``os.replace``,
  so an interrupted write leaves no file that looks complete, and the file's SHA-256 in
  the sidecar ``<file>.sha256`` (:mod:`mfsym.records.atomic`); a failed write raises
  :class:`~mfsym.records.atomic.WriteError` naming the file and the cause (a full disk
  included, which HDF5 reports as a bare "HDF error").

:func:`read_dataset` checks the bytes against the sidecar before netCDF/HDF5 sees them
(garbled bytes can make HDF5 spin forever) and, given the reader's configuration and a
scope of :mod:`mfsym.records.lineage`, that the file was written under the same
configuration where it matters.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import xarray as xr

from .atomic import atomic_path, verify_file, write_failure
from .lineage import check_config, config_json, config_sha256

CONVENTIONS = "CF-1.10"
#: the exact, hashed lock of every dependency (``uv pip compile``; see the README)
LOCK_FILE = "requirements.lock"
#: overrides where the lock is looked for
LOCK_ENV = "MFSYM_LOCK"
PACKAGES = ("mfsym", "torch", "numpy", "scipy", "POT", "xarray", "netCDF4", "snakemake")


def git_commit(start: str | os.PathLike | None = None) -> str:
    """Commit hash of the working tree (``+dirty`` if modified), or ``unknown``."""
    cwd = Path(start) if start else Path.cwd()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def source_date(start: str | os.PathLike | None = None) -> _dt.datetime | None:
    """The date a rebuild stamps on its files: ``$SOURCE_DATE_EPOCH`` when set (the
    reproducible-builds convention), else the commit time of the checkout in ``start``
    (default: the working directory), else ``None``. Never the wall clock."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        cwd = Path(start) if start else Path.cwd()
        try:
            epoch = subprocess.run(
                ["git", "log", "-1", "--format=%ct"], cwd=cwd, capture_output=True,
                text=True, check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    try:
        return _dt.datetime.fromtimestamp(int(epoch), _dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds") from None


def lock_file(start: str | os.PathLike | None = None) -> Path | None:
    """The dependency lock: ``$MFSYM_LOCK``, else ``requirements.lock`` in ``start`` (the
    working directory), else in the checkout this package is installed from (editable
    installs); ``None`` if there is none."""
    if os.environ.get(LOCK_ENV):
        return Path(os.environ[LOCK_ENV])
    for folder in (Path(start) if start else Path.cwd(), Path(__file__).resolve().parents[3]):
        if (folder / LOCK_FILE).is_file():
            return folder / LOCK_FILE
    return None


def lock_sha256(start: str | os.PathLike | None = None) -> str:
    """SHA-256 of the dependency lock's bytes, or ``absent`` when there is no lock."""
    path = lock_file(start)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else "absent"
    except OSError:
        return "absent"


def package_versions() -> str:
    out = []
    for name in PACKAGES:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return " ".join(out)


def provenance(config: Mapping, title: str) -> dict[str, str]:
    """The global attributes every result file carries (none of them a wall-clock value)."""
    date = source_date()
    return {
        "Conventions": CONVENTIONS,
        "title": title,
        "institution": "mfsym reproduction pipeline",
        "source": "mfsym (mean-field noisy SGD, exact optimal transport)",
        "references": "Maass & Fontbona, Symmetries in Overparametrized Neural Networks: "
        "A Mean-Field View, NeurIPS 2024, arXiv:2405.19995",
        "history": f"{date.isoformat(timespec='seconds')} created" if date else "created",
        "config_json": config_json(config),
        "config_sha256": config_sha256(config),
        "git_commit": git_commit(),
        "package_versions": package_versions(),
        "lock_sha256": lock_sha256(),
    }


class SchemaError(ValueError):
    """A dataset violates the results schema."""


def check_dataset(ds: xr.Dataset, allow_nonfinite: tuple[str, ...] = ()) -> None:
    """Raise :class:`SchemaError` if a variable lacks CF attributes or holds NaN/inf."""
    for name, var in ds.data_vars.items():
        missing = [a for a in ("long_name", "units") if a not in var.attrs]
        if missing:
            raise SchemaError(f"variable {name!r} lacks attribute(s) {missing}")
        if (
            name not in allow_nonfinite
            and np.issubdtype(var.dtype, np.floating)
            and not np.all(np.isfinite(var.values))
        ):
            raise SchemaError(
                f"variable {name!r} holds non-finite values; diverged runs are never written"
            )


def _encoding(ds: xr.Dataset) -> dict:
    enc = {}
    for name, var in ds.data_vars.items():
        if var.dtype.kind in "fiu" and var.ndim > 0:
            enc[name] = {"zlib": True, "complevel": 4}
    return enc


def write_dataset(
    ds: xr.Dataset,
    path,
    config: Mapping,
    title: str,
    allow_nonfinite: tuple[str, ...] = (),
) -> Path:
    """Validate, stamp provenance and write ``ds`` to ``path`` atomically (netCDF4)."""
    check_dataset(ds, allow_nonfinite)
    ds = ds.copy()
    ds.attrs = {**ds.attrs, **provenance(config, title)}
    with atomic_path(path, suffix=".nc") as tmp:
        try:
            ds.to_netcdf(tmp, engine="netcdf4", encoding=_encoding(ds))
        except (OSError, RuntimeError) as exc:  # netCDF4 raises RuntimeError for HDF errors
            raise write_failure(path, exc, needed=ds.nbytes) from exc
    return Path(path)


def read_dataset(
    path, expect_config: Mapping | None = None, scope: Sequence[str] | None = None
) -> xr.Dataset:
    """Open a results file fully into memory (and close it), after verifying it.

    The bytes are checked against the ``.sha256`` sidecar first
    (:class:`~mfsym.records.atomic.ChecksumError` naming the file if it is missing or does
    not match). With ``expect_config`` (``None``: no check), the configuration recorded in
    the file must equal it on ``scope`` (see :mod:`mfsym.records.lineage`), else
    :class:`~mfsym.records.lineage.ConfigMismatchError` names the file and the keys.
    """
    if expect_config is not None and scope is None:
        raise TypeError("read_dataset: expect_config needs the scope it determines the file on")
    verify_file(path)
    with xr.open_dataset(path, engine="netcdf4") as ds:
        ds = ds.load()
    if expect_config is not None:
        check_recorded_config(ds, path, expect_config, scope)
    return ds


def check_recorded_config(
    ds: xr.Dataset, path, expect_config: Mapping, scope: Sequence[str]
) -> None:
    """Refuse ``ds`` (read from ``path``) unless the configuration it records equals
    ``expect_config`` on ``scope`` (:class:`~mfsym.records.lineage.ConfigMismatchError`)."""
    recorded = ds.attrs.get("config_json")
    check_config(path, None if recorded is None else json.loads(recorded), expect_config, scope)


def variable(dims, values, long_name: str, units: str = "1", **attrs) -> xr.Variable:
    """A data variable with its CF attributes (``units="1"`` for dimensionless)."""
    return xr.Variable(dims, np.asarray(values), {"long_name": long_name, "units": units, **attrs})
