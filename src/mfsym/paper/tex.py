"""TeX rendering of measured numbers: macro names, number formatting, atomic text writes.

* :func:`macro_name` turns labels such as ``("RmdProj", "SI", "WI", "vanilla")`` into a valid
  TeX control-sequence name made of ASCII letters only (``mfRmdProjSIWIVanilla``): every
  label is split at non-alphanumeric characters, each piece gets an upper-case first letter,
  and digits are spelled out (``2`` → ``Two``) because a control word cannot hold digits.
* :func:`format_number` writes a float with ``digits`` significant digits, in fixed notation
  for ``1e-3 ≤ |x| < 1e4`` and as ``m\\times10^{e}`` otherwise, always inside
  ``\\ensuremath`` so a macro works in text and in math; NaN becomes ``n/a`` (a missing
  measurement is reported, never hidden).
* :func:`format_exact` writes a configuration value exactly as given (``50``, ``0.25``,
  ``10^{-4}``): it is an input, not a measurement.
* :func:`render_macros` writes ``\\newcommand{\\name}{value}`` lines; duplicated or invalid
  names are an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

PREFIX = "mf"
DIGIT_WORDS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
NOT_AVAILABLE = r"\textrm{n/a}"
_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_NAME_RE = re.compile(r"[A-Za-z]+")


def _piece(token: str) -> str:
    """One alphanumeric token as letters: digits spelled out, first letter upper-case."""
    out = "".join(DIGIT_WORDS[int(c)] if c.isdigit() else c for c in token)
    return out[:1].upper() + out[1:]


def macro_name(*labels: str, prefix: str = PREFIX) -> str:
    """A TeX control-sequence name (letters only, without the backslash) for ``labels``."""
    pieces = []
    for label in labels:
        tokens = re.split(r"[^A-Za-z0-9]+", str(label))
        pieces.extend(_piece(t) for t in tokens if t)
    name = prefix + "".join(pieces)
    if not _NAME_RE.fullmatch(name) or not pieces:
        raise ValueError(f"labels {labels!r} give no valid TeX macro name (got {name!r})")
    return name


def escape_tex(text: str) -> str:
    """Escape the TeX special characters of a plain string."""
    return "".join(_TEX_SPECIALS.get(c, c) for c in str(text))


def format_number(x, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, as TeX usable in text and math mode.

    Integers (Python/NumPy ints) are written exactly; NaN/inf give ``n/a``.
    """
    if not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits = {digits!r} is invalid; must be an integer ≥ 1")
    if isinstance(x, bool):
        raise TypeError("a boolean is not a number to format")
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, int):
        return rf"\ensuremath{{{x}}}"
    x = float(x)
    if not math.isfinite(x):
        return NOT_AVAILABLE
    if x == 0.0:
        return r"\ensuremath{0}"
    exponent = math.floor(math.log10(abs(x)))
    mantissa = round(x / 10.0**exponent, digits - 1)
    if abs(mantissa) >= 10.0:  # rounding carried into the next decade
        exponent += 1
        mantissa = round(x / 10.0**exponent, digits - 1)
    if -3 <= exponent < 4:
        decimals = max(digits - 1 - exponent, 0)
        return rf"\ensuremath{{{x:.{decimals}f}}}"
    return rf"\ensuremath{{{mantissa:.{digits - 1}f}\times10^{{{exponent}}}}}"


def format_exact(x) -> str:
    """A configuration value as written (up to 12 significant digits): 50, 0.25, 10^{-4}."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"{x!r} is not a number to format")
    if not math.isfinite(x):
        return NOT_AVAILABLE
    if isinstance(x, int) or x == 0 or 1e-3 <= abs(x) < 1e6:
        return rf"\ensuremath{{{x:.12g}}}"
    mantissa, exponent = f"{x:.11e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    power = rf"10^{{{int(exponent)}}}"
    if mantissa in ("1", "-1"):
        return rf"\ensuremath{{{mantissa[:-1]}{power}}}"
    return rf"\ensuremath{{{mantissa}\times{power}}}"


def format_list(values, digits: int = 3) -> str:
    """A comma-separated list of formatted numbers (e.g. the grid of N)."""
    return ", ".join(format_number(v, digits) for v in values)


def render_macros(macros: Mapping[str, str], header: str = "") -> str:
    """``\\newcommand`` lines for ``{name: tex}``; every name must be letters only."""
    lines = [f"% {line}" for line in header.splitlines()] if header else []
    for name, value in macros.items():
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"macro name {name!r} is not a TeX control word (letters only)")
        lines.append(rf"\newcommand{{\{name}}}{{{value}}}")
    return "\n".join(lines) + "\n"
