"""Result bundles: a manifest of SHA-256 sums, reproducible bytes, and refusal of a
tampered, truncated or incomplete bundle naming the member."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from mfsym.pipeline import bundle
from mfsym.records.atomic import verify_file

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {"results_dir": "results", "training": {"alpha": 50.0}}


@pytest.fixture
def files(tmp_path):
    out = {}
    for name, data in (("results/summary.nc", b"\x89HDF summary" * 100),
                       ("results/figures/fig_a.pdf", b"%PDF-1.4 figure" * 50),
                       ("paper/output/claims.json", b'{"claims": []}\n'),
                       ("requirements.lock", b"numpy==2.0 --hash=sha256:" + b"0" * 64)):
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[name] = path
    return out


def members(archive) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def repack(members_: dict[str, bytes], dest) -> None:
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in members_.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bundle_holds_files_config_provenance_and_manifest(files, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    archive = bundle.write_bundle(files, CONFIG, tmp_path / "b.tar.gz")
    verify_file(archive)  # written with its checksum sidecar
    got = bundle.read_bundle(archive)
    assert set(got) == {*files, bundle.CONFIG, bundle.PROVENANCE}
    content = members(archive)
    for name, path in files.items():
        assert got[name] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert content[name] == path.read_bytes()
    prov = json.loads(content[bundle.PROVENANCE])
    assert prov["config_sha256"] and prov["lock_sha256"] and prov["package_versions"]
    assert prov["history"].startswith("2023-11-14")
    manifest = members(archive)[bundle.MANIFEST].decode().splitlines()
    assert len(manifest) == len(got) and all(len(line.split("  ")[0]) == 64 for line in manifest)


def test_same_inputs_give_the_same_bundle_bytes(files, tmp_path):
    a = bundle.write_bundle(files, CONFIG, tmp_path / "a.tar.gz").read_bytes()
    b = bundle.write_bundle(files, CONFIG, tmp_path / "b.tar.gz").read_bytes()
    assert a == b


def test_an_altered_member_is_refused_by_name(files, tmp_path):
    archive = bundle.write_bundle(files, CONFIG, tmp_path / "b.tar.gz")
    content = members(archive)
    content["results/figures/fig_a.pdf"] = content["results/figures/fig_a.pdf"][:-1] + b"X"
    repack(content, tmp_path / "t.tar.gz")
    with pytest.raises(bundle.BundleError, match=r"results/figures/fig_a\.pdf does not match"):
        bundle.read_bundle(tmp_path / "t.tar.gz")


def test_a_missing_or_unlisted_member_is_refused_by_name(files, tmp_path):
    archive = bundle.write_bundle(files, CONFIG, tmp_path / "b.tar.gz")
    content = members(archive)
    del content["results/summary.nc"]
    repack(content, tmp_path / "m.tar.gz")
    with pytest.raises(bundle.BundleError, match=r"results/summary\.nc is listed .* missing"):
        bundle.read_bundle(tmp_path / "m.tar.gz")
    content = members(archive)
    content["results/extra.nc"] = b"x"
    repack(content, tmp_path / "x.tar.gz")
    with pytest.raises(bundle.BundleError, match=r"results/extra\.nc is not listed"):
        bundle.read_bundle(tmp_path / "x.tar.gz")


def test_a_truncated_bundle_is_refused_naming_the_cut_member(files, tmp_path):
    archive = bundle.write_bundle(files, CONFIG, tmp_path / "b.tar.gz")
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(bundle.BundleError, match=r"cut\.tar\.gz: .*truncated") as err:
        bundle.read_bundle(cut)
    assert "member " in str(err.value) or "the archive" in str(err.value)


def test_a_member_outside_the_bundle_is_refused(tmp_path):
    repack({"../evil": b"x", bundle.MANIFEST: b""}, tmp_path / "e.tar.gz")
    with pytest.raises(bundle.BundleError, match=r"\.\./evil.*outside"):
        bundle.read_bundle(tmp_path / "e.tar.gz")


def test_unpack_writes_every_member_with_its_sidecar(files, tmp_path):
    archive = bundle.write_bundle(files, CONFIG, tmp_path / "b.tar.gz")
    into = bundle.unpack_bundle(archive, tmp_path / "out")
    for name, path in files.items():
        assert verify_file(into / name).read_bytes() == path.read_bytes()


def test_rebuild_allows_only_figure_and_paper_rules(files, tmp_path):
    config = {**yaml.safe_load((ROOT / "config.yaml").read_text()), "inits": ["SI"],
              "teachers": ["WI"]}
    into = tmp_path / "out"
    checked = bundle.rebuild(bundle.write_bundle(files, config, tmp_path / "b.tar.gz"), into,
                             root=ROOT)
    argv = bundle.rebuild_argv(into, checked)
    allowed = argv[argv.index("--allowed-rules") + 1: argv.index("--forcerun")]
    assert "train" not in allowed and "metrics" not in allowed and "summary" not in allowed
    assert set(allowed) == {*bundle.figure_names(config), "paper_numbers", "paper"}
    assert argv[-1] == bundle.PAPER_PDF
    # Snakemake reads the checked copy, with results_dir pointing into the unpacked folder
    given = argv[argv.index("--configfile") + 1]
    assert given == str(into / bundle.CHECKED_CONFIG) and "--config" not in argv
    assert yaml.safe_load(Path(given).read_text())["results_dir"] == str(into / "results")
