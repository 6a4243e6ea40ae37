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
refused, naming it), checks the configuration, unpacks it into ``DIR`` (default
``from-bundle``), with each file's checksum sidecar, and runs Snakemake on the unpacked
results with only the figure and paper rules allowed, so nothing trains: every figure is
redrawn and ``paper/ms.pdf`` rebuilt (``--no-paper`` without LaTeX).

A bundle comes from someone else, so it is untrusted until verified:

* every member header is checked before its data is read: a plain file (no link, device
  or sparse file), a name inside the bundle, present once, at most
  ``--max-member-mb`` (default 1024) and all together at most ``--max-total-mb`` (default
  4096), at most 10 000 members; members are hashed in a stream, never held in memory;
* the configuration is parsed by a safe YAML loader (no tags), refused if it asks for
  templating (YTE's ``__use_yte__`` or any ``__…__`` key), checked against the schema, the
  checks across keys and the output folders, and written anew: Snakemake reads that
  checked copy, ``config.checked.yaml``, never the bundle's own file;
* nothing is unpacked until all of this has passed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from ..records.atomic import atomic_path, checksum_path
from ..records.results import LOCK_FILE, provenance, source_date
from . import targets
from .config import grid_of, particles_n

MANIFEST = "MANIFEST.sha256"
PROVENANCE = "PROVENANCE.json"
CONFIG = "config.yaml"
#: the bundle's configuration after every check, as Snakemake gets it
CHECKED_CONFIG = "config.checked.yaml"
SCHEMA = "workflow/schemas/config.schema.yaml"
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


#: a member name: POSIX portable file name characters, in parts separated by '/'
_PORTABLE = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
MAX_NAME_CHARS = 255


def _safe_name(archive, name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BundleError(f"{archive}: member {name!r} points outside the bundle")
    if not _PORTABLE.fullmatch(name) or len(name) > MAX_NAME_CHARS or "." in path.parts:
        raise BundleError(f"{archive}: member name {name[:80]!r} is not allowed; allowed: "
                          f"at most {MAX_NAME_CHARS} characters from A-Z a-z 0-9 . _ - in "
                          "parts separated by single '/'")
    return path.as_posix()


@dataclass(frozen=True)
class Limits:
    """What a bundle may hold before anything in it is read (a bundle is untrusted until
    verified): the bytes of one member, of all members together, and the member count.
    The manifest and the configuration are parsed, so they are held to a small cap."""

    member_bytes: int = 1 << 30
    total_bytes: int = 4 << 30
    members: int = 10_000

    def __post_init__(self):
        for name in ("member_bytes", "total_bytes", "members"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"bundle limit {name} = {value!r}; allowed: an integer ≥ 1")


#: the manifest and the configuration are read into memory and parsed: at most this many bytes
PARSED_MEMBER_BYTES = 4 << 20
_CHUNK = 1 << 20


def _check_header(archive, info: tarfile.TarInfo, seen: dict[str, int], limits: Limits) -> str:
    """The member's safe name, after its header is checked against ``limits`` (its data
    is not read yet): a plain, non-sparse file, present once, within the size caps.
    ``seen`` maps the names met so far to their sizes, with the running total under ``""``.
    """
    name = _safe_name(archive, info.name)
    if not info.isreg() or info.issparse():
        raise BundleError(f"{archive}: member {name} is not a plain file")
    if name in seen:
        raise BundleError(f"{archive}: member {name} appears twice")
    if len(seen) > limits.members:
        raise BundleError(f"{archive}: more than {limits.members} members (the limit)")
    cap = PARSED_MEMBER_BYTES if name in (MANIFEST, CONFIG) else limits.member_bytes
    if info.size > cap:
        raise BundleError(f"{archive}: member {name} declares {info.size} bytes; the limit "
                          f"for this member is {cap} bytes")
    total = seen.get("", 0) + info.size
    if total > limits.total_bytes:
        raise BundleError(f"{archive}: members declare {total} bytes or more; the limit is "
                          f"{limits.total_bytes} bytes")
    return name


def _stream(fh, size: int, sink=None) -> str:
    """SHA-256 of exactly ``size`` bytes read from ``fh`` in chunks (each chunk also goes
    to ``sink``); a short read raises :class:`EOFError`."""
    h, left = hashlib.sha256(), size
    while left:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            raise EOFError("short read")
        h.update(chunk)
        if sink is not None:
            sink.write(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _scan(archive: Path, limits: Limits, on_member) -> None:
    """Walk the members of ``archive`` in one streaming pass, each header checked before
    its data is read; ``on_member(name, info, fh)`` reads the data.  Damage is reported
    as :class:`BundleError` naming the member (or the archive)."""
    seen: dict[str, int] = {}
    current = None
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for info in tar:
                current = _check_header(archive, info, seen, limits)
                seen[current] = info.size
                seen[""] = seen.get("", 0) + info.size
                on_member(current, info, tar.extractfile(info))
                current = None
    except BundleError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        where = f"member {current}" if current else "the archive"
        raise BundleError(f"{archive}: {where} is truncated or unreadable ({exc}); "
                          "fetch the bundle again") from exc


def _parse_manifest(archive, data: bytes) -> dict[str, str]:
    listed = {}
    for line in data.decode("utf-8", "replace").splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or name in listed:
            raise BundleError(f"{archive}: {MANIFEST} line {line[:80]!r} is not "
                              "'<SHA-256>  <member>' (each member once)")
        listed[name] = digest
    return listed


def verify_bundle(archive, limits: Limits = Limits()) -> tuple[dict[str, str], dict]:
    """Check every member of ``archive`` against the manifest, in one streaming pass.

    Returns ``({member: SHA-256}, {name: bytes})``, the second holding the parsed members
    (the configuration), capped at :data:`PARSED_MEMBER_BYTES`; no other member is held in
    memory. :class:`BundleError` names the member that is missing, unlisted, altered, cut
    off, not a plain file, listed twice or over a limit of ``limits`` (or the archive,
    when it cannot be opened at all).
    """
    archive = Path(archive)
    digests: dict[str, str] = {}
    parsed: dict[str, bytes] = {}

    def on_member(name, info, fh):
        if name in (MANIFEST, CONFIG):
            parsed[name] = fh.read(info.size)
            if len(parsed[name]) != info.size:
                raise EOFError("short read")
            if name == CONFIG:
                digests[name] = _digest(parsed[name])
        else:
            digests[name] = _stream(fh, info.size)

    _scan(archive, limits, on_member)
    if MANIFEST not in parsed:
        raise BundleError(f"{archive}: no {MANIFEST}; not a results bundle")
    listed = _parse_manifest(archive, parsed.pop(MANIFEST))
    for name in sorted(set(listed) | set(digests)):
        if name not in digests:
            raise BundleError(f"{archive}: {name} is listed in {MANIFEST} but missing "
                              "(truncated bundle?)")
        if name not in listed:
            raise BundleError(f"{archive}: {name} is not listed in {MANIFEST}")
        if digests[name] != listed[name]:
            raise BundleError(f"{archive}: {name} does not match its SHA-256 in {MANIFEST} "
                              "(altered or corrupted)")
    return digests, parsed


def read_bundle(archive, limits: Limits = Limits()) -> dict[str, str]:
    """``{member: SHA-256}`` of ``archive``'s members after :func:`verify_bundle`."""
    return verify_bundle(archive, limits)[0]


def _into_folder(into) -> Path:
    into = Path(into)
    if into.exists() and not into.is_dir():
        raise BundleError(f"--into {into} is an existing file; give a folder (new or "
                          "from an earlier rebuild)")
    return into


def unpack_bundle(archive, into, limits: Limits = Limits()) -> Path:
    """Verify ``archive`` (:func:`read_bundle`), then write its members under ``into``,
    each with its checksum sidecar; returns ``into``.

    The members are written into a fresh staging folder next to ``into`` and hashed again
    on the way (the archive could change between the passes); only when all of them match
    are they moved into ``into``. A refused bundle leaves ``into`` as it was.
    """
    archive, into = Path(archive), _into_folder(into)
    digests = read_bundle(archive, limits)
    return _unpack(archive, into, digests, limits)


def _unpack(archive: Path, into: Path, digests: Mapping[str, str], limits: Limits) -> Path:
    try:
        into.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{into.name}.unpacking-", dir=into.parent))
    except OSError as exc:
        raise BundleError(f"--into {into}: cannot create a folder there ({exc})") from exc
    try:
        def on_member(name, info, fh):
            if name == MANIFEST:
                return
            with atomic_path(staging / name) as tmp, open(tmp, "wb") as out:
                if _stream(fh, info.size, out) != digests.get(name):
                    raise BundleError(f"{archive}: {name} changed while it was unpacked")

        _scan(archive, limits, on_member)
        for name in sorted(digests):
            for src in (staging / name, checksum_path(staging / name)):
                dest = into / src.relative_to(staging)
                if dest.is_dir() and not dest.is_symlink():
                    raise BundleError(f"--into {into}: {dest} is a folder; the bundle has a "
                                      "file there")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return into


def _walk_size(value, budget: int = 100_000) -> int:
    """Number of nodes in a parsed YAML tree, stopping past ``budget`` (YAML aliases can
    make a small file expand to a huge tree)."""
    count, stack = 0, [value]
    while stack and count <= budget:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _templating_keys(value, path=()) -> list[str]:
    """Keys of a parsed configuration that ask a loader to template it (YTE's
    ``__use_yte__``, ``__definitions__``, ``__variables__``: any ``__…__`` key)."""
    found = []
    if isinstance(value, dict):
        for key, sub in value.items():
            where = (*path, str(key))
            if isinstance(key, str) and key.startswith("__"):
                found.append(".".join(where))
            found += _templating_keys(sub, where)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            found += _templating_keys(sub, (*path, str(i)))
    return found


def bundle_config(data: bytes | None, archive, into, root=None) -> dict:
    """A bundle's configuration ``data`` (the bytes of its ``config.yaml``), parsed safely
    and checked before anything else sees it: YAML without tags or templating, a mapping
    of bounded size, every key valid against the schema, the checks across keys and the
    output folders, with ``results_dir`` set to ``into/results`` (``root``: the checkout,
    default the working directory). Raises :class:`BundleError` naming what is wrong."""
    from .config import ConfigError, check_all, load_schema

    where = f"{archive}: {CONFIG}"
    if data is None:
        raise BundleError(f"{where} is missing; a results bundle carries its configuration")
    root = Path.cwd() if root is None else Path(root)
    try:
        config = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BundleError(f"{where} is not plain YAML ({problem}); a bundle's "
                          "configuration holds plain values only (no tags)") from None
    if not isinstance(config, dict):
        raise BundleError(f"{where} holds a {type(config).__name__}, not the keys of a "
                          "configuration")
    if _walk_size(config) > 100_000:
        raise BundleError(f"{where} expands to more than 100000 values (YAML aliases?)")
    templated = _templating_keys(config)
    if templated:
        raise BundleError(f"{where}: templating is not allowed in a bundle (keys "
                          f"{', '.join(templated)}); a configuration holds plain values only")
    config["results_dir"] = str(Path(into) / "results")
    try:
        schema = load_schema(root / SCHEMA)
    except OSError as exc:
        raise BundleError(f"no configuration schema at {root / SCHEMA} ({exc}); run the "
                          "rebuild from the root of a checkout") from None
    try:
        return check_all(config, schema, root, root)
    except ConfigError as exc:
        raise BundleError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"{where}: invalid configuration ({exc!r})") from None


def rebuild(archive, into, limits: Limits = Limits(), root=None) -> dict:
    """Verify ``archive``, check its configuration (:func:`bundle_config`), and only then
    unpack it into ``into``; returns the checked configuration. A refused bundle leaves
    nothing behind."""
    archive, into = Path(archive), _into_folder(into)
    digests, parsed = verify_bundle(archive, limits)
    config = bundle_config(parsed.get(CONFIG), archive, into, root)
    _unpack(archive, into, digests, limits)
    return config


def rebuild_argv(into, config: Mapping, cores: str = "all", paper: bool = True,
                 extra: Sequence[str] = ()) -> list[str]:
    """The Snakemake command that redraws every figure (and builds the paper) from the
    results unpacked in ``into``, with only figure and paper rules allowed.

    Snakemake gets the checked configuration ``config`` (:func:`bundle_config`), written
    anew by a plain YAML dumper to ``into/config.checked.yaml``; never the bundle's file."""
    into = Path(into)
    checked = into / CHECKED_CONFIG
    with atomic_path(checked, checksum=False) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=True), encoding="utf-8")
    rules = figure_names(config) + (list(PAPER_RULES) if paper else ["paper_numbers"])
    wanted = [f for name in figure_names(config)
              for f in targets.figure_files(config["results_dir"], name)]
    wanted += [PAPER_PDF] if paper else [f"{PAPER_OUTPUT_DIR}/{n}" for n in PAPER_OUTPUTS]
    return [sys.executable, "-m", "snakemake", "--cores", str(cores), *extra,
            "--configfile", str(checked),
            "--allowed-rules", *rules, "--forcerun", *rules, "--", *wanted]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m mfsym.pipeline.bundle",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("verify", "check every member against the manifest"),
                       ("rebuild", "verify, unpack, redraw every figure and build the paper")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("bundle")
        cmd.add_argument("--max-member-mb", type=int, default=Limits.member_bytes >> 20,
                         help="refuse a member larger than this (MiB; default %(default)s)")
        cmd.add_argument("--max-total-mb", type=int, default=Limits.total_bytes >> 20,
                         help="refuse members larger than this together (MiB; default "
                              "%(default)s)")
        if name == "rebuild":
            cmd.add_argument("--into", default="from-bundle")
            cmd.add_argument("--cores", default="all")
            cmd.add_argument("--no-paper", action="store_true", help="figures only (no LaTeX)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # more Snakemake options
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra or "--" in argv else 0)])
    try:
        limits = Limits(args.max_member_mb << 20, args.max_total_mb << 20)
        if args.command == "verify":
            print(f"{args.bundle}: {len(read_bundle(args.bundle, limits))} members match "
                  f"{MANIFEST}")
            return 0
        config = rebuild(args.bundle, args.into, limits)
        command = rebuild_argv(args.into, config, args.cores, not args.no_paper, extra)
    except (BundleError, ValueError, OSError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"{args.bundle}: verified, configuration checked, unpacked into {args.into}",
          flush=True)
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
