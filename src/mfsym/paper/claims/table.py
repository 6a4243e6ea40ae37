"""The claims as the manuscript shows them: the table body, its JSON, and the macros of
each row's verdict and values with the count of each verdict kind."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict

from ..tex import escape_tex, format_number, macro_name
from .base import VERDICTS, Claim

#: Macro of the count of each verdict kind (``\mfClaimsSupported``, …).
COUNT_MACROS = dict(zip(VERDICTS, ("mfClaimsSupported", "mfClaimsRounding",
                                   "mfClaimsNotSupported", "mfClaimsNotMeasured"),
                        strict=True))


def verdict_counts(claims: Sequence[Claim]) -> dict[str, int]:
    """How many rows have each verdict kind (every kind listed, zeros included)."""
    unknown = sorted({c.verdict for c in claims} - set(VERDICTS))
    if unknown:
        raise ValueError(f"unknown verdict(s) {unknown}; allowed: {list(VERDICTS)}")
    return {v: sum(c.verdict == v for c in claims) for v in VERDICTS}


def claim_macros(claims: Sequence[Claim], digits: int) -> dict[str, str]:
    """Per row its verdict and evidence values; the count of each verdict kind and the
    number of rows."""
    out = {}
    for c in claims:
        out[macro_name("Verdict", c.key)] = escape_tex(c.verdict)
        for i, (_, v) in enumerate(c.values, start=1):
            out[macro_name("Claim", c.key, "Value", str(i))] = format_number(v, digits)
    for kind, count in verdict_counts(claims).items():
        out[COUNT_MACROS[kind]] = format_number(count, digits)
    out["mfClaimsTotal"] = format_number(len(claims), digits)
    return out


def render_claims_table(claims: Sequence[Claim], digits: int) -> str:
    """The body of a ``tabularx`` (claim, statement, evidence, criterion, verdict)."""
    lines = [
        r"\begin{tabularx}{\linewidth}{@{}c>{\raggedright}X>{\raggedright}X"
        r">{\raggedright}X>{\raggedright\arraybackslash\hyphenpenalty=10000}p{2.3cm}@{}}",
        r"\toprule",
        r"Claim & Statement & Measured & Criterion & Verdict \\",
        r"\midrule",
    ]
    for c in claims:
        evidence = "; ".join(f"{label}: {format_number(v, digits)}" for label, v in c.values)
        verdict = rf"\textbf{{{escape_tex(c.verdict)}}}"
        lines.append(
            rf"{c.claim} & {c.statement} & {evidence} & {c.criterion} & {verdict} \\"
        )
    lines += [r"\bottomrule", r"\end{tabularx}"]
    return "\n".join(lines) + "\n"


def claims_json(claims: Sequence[Claim]) -> str:
    """The claims as JSON (NaN written as null)."""

    def clean(c: Claim) -> dict:
        d = asdict(c)
        d["values"] = [
            {"label": lab, "value": None if math.isnan(v) else v} for lab, v in c.values
        ]
        return d

    return json.dumps([clean(c) for c in claims], indent=2) + "\n"


def claims_markdown(claims: Sequence[Claim], digits: int = 3) -> str:
    """The claims as a Markdown table: claim, statement, verdict, evidence (label = value,
    ``digits`` significant digits); statements and labels keep their TeX text."""
    lines = ["| claim | statement | verdict | evidence |", "| --- | --- | --- | --- |"]
    for c in claims:
        evidence = "; ".join(
            f"{label} = {'n/a' if math.isnan(v) else f'{v:.{digits}g}'}" for label, v in c.values)
        cells = [str(c.claim), c.statement, c.verdict, evidence]
        lines.append("| " + " | ".join(x.replace("|", "\\|").replace("\n", " ")
                                        for x in cells) + " |")
    return "\n".join(lines) + "\n"
