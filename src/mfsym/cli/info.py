"""``mfsym info``: a result file's provenance, after verifying its checksum.

The file's bytes are checked against its ``.sha256`` sidecar, and the recorded
configuration against its recorded SHA-256 (``config_sha256``); then the provenance
(title, history, git commit, lock, package versions), the setting and the variables are
printed.  A mismatch is an error naming the file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import xarray as xr

from ..records.atomic import file_sha256, verify_file
from ..records.lineage import config_sha256

HELP = "print a result file's provenance and verify its checksum"
PROVENANCE = ("title", "history", "git_commit", "lock_sha256", "config_sha256")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a result file (.nc) written by mfsym")
    p.add_argument("--config", action="store_true", help="also print the full configuration")


def run(args: argparse.Namespace) -> int:
    path = args.file
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: no such file")
    verify_file(path)
    print(f"{path}: checksum OK (sha256 {file_sha256(path)})")
    with xr.open_dataset(path, engine="netcdf4") as ds:
        attrs, dims = dict(ds.attrs), dict(ds.sizes)
        variables = sorted(ds.data_vars)
    recorded = attrs.get("config_json")
    if recorded is not None:
        config = json.loads(recorded)
        if config_sha256(config) != attrs.get("config_sha256"):
            raise ValueError(f"{str(path)!r}: the recorded configuration does not match its "
                             "recorded config_sha256")
        print("configuration: matches its recorded config_sha256")
    for key in PROVENANCE:
        if key in attrs:
            print(f"{key}: {attrs[key]}")
    if recorded is not None:
        group, unit = config.get("group", {}), config.get("unit", {})
        print(f"group: {json.dumps(group)}")
        print(f"unit: {json.dumps(unit)}")
    print(f"package_versions: {attrs.get('package_versions', '')}")
    print("dims: " + ", ".join(f"{k}={v}" for k, v in dims.items()))
    print("variables: " + ", ".join(variables))
    if args.config and recorded is not None:
        print(json.dumps(config, indent=2, sort_keys=True))
    return 0
