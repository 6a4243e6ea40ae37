"""Inputs from someone else: a bundle, a checkpoint, a configuration or an API call that is
hostile or merely wrong gets a clear, named refusal; it never runs code, exhausts memory,
crashes with a traceback or silently changes a result.

(The kernel cache's trust rules are tested in ``test_kernels.py``, next to its other
faults; the fuzz passes over the same surfaces are in ``test_fuzz_inputs.py``.)
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from mfsym.pipeline import bundle

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


def craft(members: dict[str, bytes], dest: Path, manifest: bool = True) -> Path:
    """A gzipped tar of ``members`` with a manifest that vouches for every one of them
    (as a hostile sender would make it)."""
    members = dict(members)
    if manifest:
        members[bundle.MANIFEST] = "".join(
            f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in members.items()
        ).encode()
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def rebuild(archive, into, *extra):
    """``bundle rebuild`` from the checkout's root, in this process; (exit code, stderr)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return bundle.main(["rebuild", str(archive), "--into", str(into), "--no-paper",
                            *extra])
    finally:
        os.chdir(cwd)


# ---------------------------------------------------------------------------------------
# bundles
# ---------------------------------------------------------------------------------------
def test_a_templated_bundle_configuration_never_runs(tmp_path, capsys):
    """YTE templating in a bundle's config.yaml is refused before Snakemake (whose
    --configfile loader would evaluate it) sees the file; nothing is unpacked."""
    marker = tmp_path / "ran"
    expression = f"?__import__('pathlib').Path({str(marker)!r}).write_text('ran')"
    config = {**CONFIG, "__use_yte__": True, "results_dir": expression}
    archive = craft({bundle.CONFIG: yaml.safe_dump(config).encode()}, tmp_path / "b.tar.gz")
    assert bundle.read_bundle(archive)  # the manifest is self-consistent
    into = tmp_path / "into"
    assert rebuild(archive, into) == 2
    err = capsys.readouterr().err
    assert "templating is not allowed" in err and "__use_yte__" in err
    assert not marker.exists() and not into.exists()


@pytest.mark.parametrize(("content", "named"), [
    (None, "config.yaml is missing"),
    (b"- 1\n- 2\n", "holds a list, not the keys of a configuration"),
    (b"results_dir: !!python/object/apply:os.getcwd []\n", "not plain YAML"),
    (b"a: &a [1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
     b"d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
     b"f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n", "expands to more than 100000 values"),
    (b"\xff\xfe", "not plain YAML"),
    (yaml.safe_dump({**CONFIG, "training": {**CONFIG["training"], "alpha": "fast"}}).encode(),
     "training.alpha"),
], ids=["missing", "list", "python-tag", "alias-bomb", "not-utf8", "bad-value"])
def test_a_bad_bundle_configuration_is_refused_in_one_line(tmp_path, capsys, content, named):
    members = {"results/summary.nc": b"x"}
    if content is not None:
        members[bundle.CONFIG] = content
    into = tmp_path / "into"
    assert rebuild(craft(members, tmp_path / "b.tar.gz"), into) == 2
    err = capsys.readouterr().err
    assert err.startswith("refused: ") and named in err and "Traceback" not in err, err
    assert not into.exists()


def test_rebuild_into_an_existing_file_is_refused(tmp_path, capsys):
    archive = craft({bundle.CONFIG: yaml.safe_dump(CONFIG).encode()}, tmp_path / "b.tar.gz")
    into = tmp_path / "taken"
    into.write_text("mine\n")
    assert rebuild(archive, into) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert into.read_text() == "mine\n"


def test_the_configuration_snakemake_reads_is_the_checked_copy(tmp_path):
    archive = craft({bundle.CONFIG: yaml.safe_dump(CONFIG).encode()}, tmp_path / "b.tar.gz")
    into = tmp_path / "into"
    checked = bundle.rebuild(archive, into, root=ROOT)
    argv = bundle.rebuild_argv(into, checked, paper=False)
    given = Path(argv[argv.index("--configfile") + 1])
    assert given.name == bundle.CHECKED_CONFIG and given.parent == into
    assert yaml.safe_load(given.read_text()) == checked


def sparse_bundle(tmp_path, apparent: int) -> Path:
    """A bundle of a few hundred bytes whose one member (GNU sparse) declares ``apparent``
    bytes, made by GNU tar (skip where there is none)."""
    if shutil.which("tar") is None:
        pytest.skip("no tar command to make a sparse member")
    folder = tmp_path / "sparse"
    folder.mkdir()
    with open(folder / "results.nc", "wb") as fh:
        fh.truncate(apparent)
    archive = tmp_path / "sparse.tar.gz"
    made = subprocess.run(["tar", "--sparse", "--format=gnu", "-czf", str(archive), "-C",
                           str(folder), "results.nc"], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"tar cannot write sparse members here: {made.stderr[-200:]!r}")
    return archive


def test_a_tiny_bundle_declaring_gigabytes_is_refused_before_it_is_read(tmp_path):
    """The member's header is checked before its data is read; the child runs under a
    2 GiB address-space cap above what it holds at start and a 60 s limit."""
    archive = sparse_bundle(tmp_path, 16 << 30)
    assert archive.stat().st_size < 4096
    code = (
        "import resource, sys\n"
        "from mfsym.pipeline import bundle\n"
        "used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (used + (2 << 30), resource.RLIM_INFINITY))\n"
        "sys.exit(bundle.main(['verify', sys.argv[1]]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(archive)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "results.nc is not a plain file" in res.stderr or "declares" in res.stderr
    assert "Traceback" not in res.stderr


def test_member_size_limits_are_configurable_and_named(tmp_path, capsys):
    archive = craft({"results/summary.nc": b"x" * (3 << 20), bundle.CONFIG: b"{}"},
                    tmp_path / "b.tar.gz")
    assert "results/summary.nc" in bundle.read_bundle(archive)  # within the defaults
    assert bundle.main(["verify", str(archive), "--max-member-mb", "2"]) == 2
    err = capsys.readouterr().err
    assert "results/summary.nc declares 3145728 bytes" in err and "2097152" in err
    assert bundle.main(["verify", str(archive), "--max-total-mb", "1"]) == 2
    assert "the limit is 1048576 bytes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="member_bytes = 0"):
        bundle.Limits(member_bytes=0)


def test_a_member_present_twice_is_refused(tmp_path):
    """tar lets a later copy of a name replace an earlier one: the manifest would vouch
    for one copy while the other lands on disk."""
    dest = tmp_path / "twice.tar.gz"
    data = b"x"
    manifest = f"{hashlib.sha256(data).hexdigest()}  results/a.nc\n".encode()
    with tarfile.open(dest, "w:gz") as tar:
        for name, payload in ((bundle.MANIFEST, manifest), ("results/a.nc", data),
                              ("results/a.nc", b"y")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(bundle.BundleError, match="results/a.nc appears twice"):
        bundle.read_bundle(dest)


def test_unpacking_streams_and_leaves_nothing_when_refused(tmp_path):
    """A member that fails its digest on the unpacking pass leaves ``into`` as it was."""
    good = {"results/a.nc": b"a" * 1000, bundle.CONFIG: yaml.safe_dump(CONFIG).encode()}
    archive = craft(good, tmp_path / "b.tar.gz")
    into = tmp_path / "into"
    into.mkdir()
    (into / "keep.txt").write_text("mine\n")
    digests = bundle.read_bundle(archive)
    with pytest.raises(bundle.BundleError, match="results/a.nc changed while"):
        bundle._unpack(archive, into, {**digests, "results/a.nc": "0" * 64},
                       bundle.Limits())
    assert sorted(p.name for p in into.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if ".unpacking-" in p.name]


def test_the_memory_bound_caps_this_process():
    """The address-space cap the fuzz tests rely on is real: an allocation above it fails
    with MemoryError rather than growing the process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20), hard))
    try:
        with pytest.raises(MemoryError):
            bytearray(1 << 30)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
