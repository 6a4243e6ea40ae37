"""Result bundles: one archive with what a reader needs to check the paper without training.

A bundle (``snakemake bundle`` → ``<results_dir>/bundle/mfsym-results.tar.gz``) holds

* ``results/summary.nc``, ``results/heuristic.nc``, ``results/noether/*.nc``,
  ``results/deep/*.nc``, ``results/rotation/{summary,quadrature}.nc``,
  ``results/saddle.nc``, the teacher
  clouds and the one run file the particle figures draw, and every figure (PDF and PNG);
* ``paper/output/`` (``numbers.tex``, ``claims.tex``, ``claims.json``);
* ``config.yaml`` (the run's configuration) and ``requirements.lock``;
* ``PROVENANCE.json`` (configuration, its SHA-256, git commit, package versions, lock
  SHA-256, source date) and ``MANIFEST.sha256``, the SHA-256 of every other member in the
  format of ``sha256sum``.

The archive itself is reproducible: members sorted, owner 0, mode 0644, times set to the
source date (:func:`mfsym.records.results.source_date`, else 0), gzip without a time stamp.

``python3 -m mfsym.pipeline.bundle rebuild BUNDLE [--into DIR] [-- SNAKEMAKE OPTIONS]``
checks every member against the manifest (a missing, extra, altered or truncated member is
refused, naming it), unpacks it into ``DIR`` (default ``from-bundle``), with each file's
checksum sidecar, and runs Snakemake on the unpacked results with only the figure and
paper rules allowed, so nothing trains: every figure is redrawn and ``paper/ms.pdf``
rebuilt (``--no-paper`` without LaTeX).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import yaml

from ..records.atomic import atomic_path
from ..records.results import LOCK_FILE, provenance, source_date
from . import targets
from .config import grid_of, particles_n

MANIFEST = "MANIFEST.sha256"
PROVENANCE = "PROVENANCE.json"
CONFIG = "config.yaml"
BUNDLE_NAME = "bundle/mfsym-results.tar.gz"
PAPER_OUTPUTS = ("numbers.tex", "claims.tex", "claims.json")
PAPER_OUTPUT_DIR = "paper/output"
PAPER_PDF = "paper/ms.pdf"
#: rules a rebuild from a bundle may run: nothing that trains or measures
PAPER_RULES = ("paper_numbers", "paper")


class BundleError(ValueError):
    """A bundle is truncated, altered or incomplete; the message names the member."""


def bundle_path(config: Mapping) -> str:
    return f"{config['results_dir']}/{BUNDLE_NAME}"


def figure_names(config: Mapping) -> list[str]:
    """Every figure of the default run (grid, heuristic, Noether, deep, rotation, saddle)."""
    return [*targets.grid_figures(config), targets.HEURISTIC_FIGURE,
            *targets.NOETHER_FIGURES.values(),
            *(targets.deep_figures(config) if config.get("deep") else ()),
            *targets.rotation_figures(config), *targets.saddle_figures(config)]


def bundle_files(config: Mapping) -> dict[str, str]:
    """``{name in the bundle: path}`` of the result files a bundle carries."""
    results = config["results_dir"]
    grid = grid_of(config)
    figures = config["figures"]
    particles = "runs/{}/N{}/{}.nc".format(
        figures["particles_init"], particles_n(config), grid.block_of(figures["particles_seed"])
    )
    names = ["summary.nc", "heuristic.nc", "data/teachers.nc", particles,
             *(f"noether/{study}.nc" for study in targets.NOETHER_FIGURES),
             *(f"deep/{stage}.nc" for stage in targets.DEEP_RULES if config.get("deep")),
             *((f"{targets.ROTATION_DIR}/summary.nc", f"{targets.ROTATION_DIR}/quadrature.nc")
               if config.get("rotation") else ()),
             *((targets.SADDLE_DATASET,) if config.get("saddle") else ()),
             *(f"figures/{name}.{ext}" for name in figure_names(config)
               for ext in targets.FIGURE_FORMATS)]
    files = {f"results/{name}": f"{results}/{name}" for name in names}
    files.update({f"{PAPER_OUTPUT_DIR}/{n}": f"{PAPER_OUTPUT_DIR}/{n}" for n in PAPER_OUTPUTS})
    files[LOCK_FILE] = LOCK_FILE
    return files


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(files: Mapping[str, str | Path], config: Mapping, dest) -> Path:
    """Write the bundle of ``files`` (``{name: path}``) and ``config`` to ``dest``."""
    members = {name: Path(path).read_bytes() for name, path in files.items()}
    members[CONFIG] = yaml.safe_dump(dict(config), sort_keys=True).encode()
    prov = provenance(config, "mfsym results bundle")
    members[PROVENANCE] = (json.dumps(prov, sort_keys=True, indent=1) + "\n").encode()
    members[MANIFEST] = "".join(
        f"{_digest(data)}  {name}\n" for name, data in sorted(members.items())
    ).encode()
    date = source_date()
    mtime = int(date.timestamp()) if date else 0
    with atomic_path(dest, suffix=".tar.gz") as tmp:
        with open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in sorted(members, key=lambda n: (n != MANIFEST, n)):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(members[name]), mtime, 0o644
                tar.addfile(info, io.BytesIO(members[name]))
    return Path(dest)


def _safe_name(archive, name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BundleError(f"{archive}: member {name!r} points outside the bundle")
    return path.as_posix()


def read_bundle(archive) -> dict[str, bytes]:
    """Every member of ``archive`` after checking it against the manifest.

    :class:`BundleError` names the member that is missing, unlisted, altered or cut off
    (or the archive, when it cannot be opened at all).
    """
    archive = Path(archive)
    members: dict[str, bytes] = {}
    current = None
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for info in tar:
                current = _safe_name(archive, info.name)
                if not info.isfile():
                    raise BundleError(f"{archive}: member {current} is not a plain file")
                members[current] = tar.extractfile(info).read()
                if len(members[current]) != info.size:
                    raise EOFError("short read")
                current = None
    except BundleError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        where = f"member {current}" if current else "the archive"
        raise BundleError(f"{archive}: {where} is truncated or unreadable ({exc}); "
                          "fetch the bundle again") from exc
    if MANIFEST not in members:
        raise BundleError(f"{archive}: no {MANIFEST}; not a results bundle")
    listed = {}
    for line in members.pop(MANIFEST).decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name in sorted(set(listed) | set(members)):
        if name not in members:
            raise BundleError(f"{archive}: {name} is listed in {MANIFEST} but missing "
                              "(truncated bundle?)")
        if name not in listed:
            raise BundleError(f"{archive}: {name} is not listed in {MANIFEST}")
        if _digest(members[name]) != listed[name]:
            raise BundleError(f"{archive}: {name} does not match its SHA-256 in {MANIFEST} "
                              "(altered or corrupted)")
    return members


def unpack_bundle(archive, into) -> Path:
    """Verify ``archive`` (:func:`read_bundle`), then write its members under ``into``,
    each with its checksum sidecar; returns ``into``."""
    members = read_bundle(archive)
    into = Path(into)
    for name, data in members.items():
        with atomic_path(into / name) as tmp:
            Path(tmp).write_bytes(data)
    return into


def rebuild_argv(into, cores: str = "all", paper: bool = True,
                 extra: Sequence[str] = ()) -> list[str]:
    """The Snakemake command that redraws every figure (and builds the paper) from the
    results unpacked in ``into``, with only figure and paper rules allowed."""
    into = Path(into)
    config = yaml.safe_load((into / CONFIG).read_text(encoding="utf-8"))
    config["results_dir"] = str(into / "results")
    rules = figure_names(config) + (list(PAPER_RULES) if paper else ["paper_numbers"])
    wanted = [f for name in figure_names(config)
              for f in targets.figure_files(config["results_dir"], name)]
    wanted += [PAPER_PDF] if paper else [f"{PAPER_OUTPUT_DIR}/{n}" for n in PAPER_OUTPUTS]
    return [sys.executable, "-m", "snakemake", "--cores", str(cores), *extra,
            "--configfile", str(into / CONFIG), "--config", f"results_dir={into / 'results'}",
            "--allowed-rules", *rules, "--forcerun", *rules, "--", *wanted]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mfsym.pipeline.bundle",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("verify", "check every member against the manifest"),
                       ("rebuild", "verify, unpack, redraw every figure and build the paper")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("bundle")
        if name == "rebuild":
            cmd.add_argument("--into", default="from-bundle")
            cmd.add_argument("--cores", default="all")
            cmd.add_argument("--no-paper", action="store_true", help="figures only (no LaTeX)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # more Snakemake options
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra or "--" in argv else 0)])
    try:
        if args.command == "verify":
            print(f"{args.bundle}: {len(read_bundle(args.bundle))} members match {MANIFEST}")
            return 0
        into = unpack_bundle(args.bundle, args.into)
    except BundleError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"{args.bundle}: verified, unpacked into {into}", flush=True)
    command = rebuild_argv(into, args.cores, not args.no_paper, extra)
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
