"""Build the manuscript PDF with latexmk in a staging folder, then move it into place.

Staging layout (wiped first, so no stale input survives; only a folder holding the
builder's marker is ever wiped, any other non-empty folder is refused)::

    <build_dir>/.mfsym-paper-staging        (marker: this build made the folder)
    <build_dir>/ms.tex
    <build_dir>/output/<generated>.tex     (measured numbers, claims table)
    <build_dir>/figures/<name>.pdf         (the figures named in ms.tex)
    <build_dir>/out/                        (latexmk's -outdir: aux, log, pdf)

latexmk runs as ``latexmk -pdf -interaction=nonstopmode -halt-on-error -outdir=out ms.tex``;
the finished PDF is copied next to the destination and renamed onto it (``os.replace``),
so a failed build never leaves a partial ``ms.pdf``. pdfTeX runs with
``SOURCE_DATE_EPOCH`` (the source date of :func:`mfsym.records.results.source_date`, else 0)
and ``FORCE_SOURCE_DATE=1``, so the PDF's dates, ``\\today`` and its trailer ID do not
depend on the wall clock.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from ..records.atomic import atomic_path, verify_file
from ..records.results import source_date
from ..records.staging import STAGING_MARKER, staging_refusal

log = logging.getLogger(__name__)

TEX_DEBIAN_PACKAGES = (
    "latexmk",
    "texlive-latex-base",
    "texlive-latex-recommended",
    "texlive-fonts-recommended",
    "lmodern",
)
TEX_PROGRAMS = ("latexmk", "pdflatex")
_INCLUDE_RE = re.compile(r"^[^%\n]*?\\includegraphics(?:\[[^\]]*\])?\{([^}]+)\}", re.M)


class LatexMissing(RuntimeError):
    """latexmk or pdflatex is not installed."""


class LatexFailed(RuntimeError):
    """latexmk returned an error; the message holds the end of the TeX log."""


class UnsafeBuildDir(RuntimeError):
    """The staging folder holds files the builder did not create; it is left alone."""


def missing_latex_programs() -> list[str]:
    return [p for p in TEX_PROGRAMS if shutil.which(p) is None]


def require_latex() -> None:
    """Raise :class:`LatexMissing` naming the Debian packages to install."""
    missing = missing_latex_programs()
    if missing:
        raise LatexMissing(
            f"building the manuscript needs {', '.join(missing)}, not found on PATH; on "
            f"Debian/Ubuntu install: apt-get install -y {' '.join(TEX_DEBIAN_PACKAGES)}"
        )


def figures_in_tex(tex_path) -> list[str]:
    """Names of the figures ``\\includegraphics`` loads in a TeX file (comments ignored)."""
    text = Path(tex_path).read_text(encoding="utf-8")
    names = []
    for match in _INCLUDE_RE.finditer(text):
        name = Path(match.group(1).strip()).stem
        if name not in names:
            names.append(name)
    return names


def _fresh_staging(build_dir: Path) -> None:
    """Empty ``build_dir`` (only if the builder made it) and mark it as the builder's."""
    refusal = staging_refusal(build_dir)
    if refusal is not None:
        raise UnsafeBuildDir(
            f"refusing to wipe the staging folder {str(build_dir)!r}: it {refusal}; give "
            "paper.build_dir a folder of its own (e.g. paper/build) or empty this one by hand"
        )
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    (build_dir / STAGING_MARKER).write_text(
        "Staging folder of the manuscript build; wiped at every build.\n", encoding="utf-8"
    )


def _stage(build_dir: Path, tex: Path, generated: Iterable, figures: Iterable) -> None:
    _fresh_staging(build_dir)
    (build_dir / "output").mkdir()
    (build_dir / "figures").mkdir()
    shutil.copy2(tex, build_dir / tex.name)
    for path in map(Path, generated):
        shutil.copy2(path, build_dir / "output" / path.name)
    for path in map(Path, figures):
        shutil.copy2(path, build_dir / "figures" / path.name)


def _check_figures(tex: Path, figures: list[Path]) -> None:
    have = {p.stem for p in figures}
    missing = [name for name in figures_in_tex(tex) if name not in have]
    if missing:
        raise FileNotFoundError(f"{tex.name} includes figure(s) {missing} that were not given")
    absent = [str(p) for p in figures if not p.is_file()]
    if absent:
        raise FileNotFoundError(f"figure file(s) not found: {absent}")


def _log_tail(log: Path, lines: int = 40) -> str:
    if not log.is_file():
        return "(no TeX log written)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def build_pdf(
    tex_path,
    generated: Iterable,
    figures: Iterable,
    output_pdf,
    build_dir,
    log_path=None,
    timeout_s: float = 600.0,
) -> Path:
    """Stage ``tex_path``, the generated TeX files and the figure PDFs, run latexmk, and
    atomically place the PDF at ``output_pdf``. The generated files and figures are checked
    against their checksum sidecars first (:class:`~mfsym.records.atomic.ChecksumError`).
    latexmk's output goes to ``log_path`` if given, else to this module's logger (the job
    log of the ``paper`` rule)."""
    require_latex()
    tex, build_dir, output_pdf = Path(tex_path), Path(build_dir), Path(output_pdf)
    figures = [Path(p) for p in figures]
    generated = [Path(p) for p in generated]
    _check_figures(tex, figures)
    for path in (*generated, *figures):  # pipeline outputs: their bytes must be intact
        verify_file(path)
    _stage(build_dir, tex, generated, figures)
    cmd = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-outdir=out",
           tex.name]
    date = source_date()
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(int(date.timestamp()) if date else 0),
           "FORCE_SOURCE_DATE": "1"}
    proc = subprocess.run(
        cmd, cwd=build_dir, capture_output=True, text=True, timeout=timeout_s, check=False,
        env=env,
    )
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(proc.stdout + proc.stderr, encoding="utf-8")
    else:
        log.info("latexmk (exit %d):\n%s", proc.returncode, proc.stdout + proc.stderr)
    built = build_dir / "out" / (tex.stem + ".pdf")
    if proc.returncode != 0 or not built.is_file():
        raise LatexFailed(
            f"latexmk failed (exit {proc.returncode}) on {tex.name}; end of the TeX log "
            f"({build_dir / 'out' / (tex.stem + '.log')}):\n"
            + _log_tail(build_dir / "out" / (tex.stem + ".log"))
        )
    with atomic_path(output_pdf) as tmp:
        shutil.copyfile(built, tmp)
    return output_pdf
