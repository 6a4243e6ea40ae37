"""The figures' shared look (seaborn theme, one colour per scheme) and the atomic writer."""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from ..records.atomic import atomic_path  # noqa: E402

SCHEME_ORDER = ("vanilla", "DA", "FA", "EA")
FORMATS = ("pdf", "png")
#: metadata written into each format: the PDF carries no creation date (matplotlib would
#: stamp the wall clock), so redrawing a figure from the same data gives the same bytes
METADATA = {"pdf": {"CreationDate": None}, "png": {}}
#: rcParams under which a figure has no layout engine (see :func:`save_figure`)
NO_LAYOUT = {"figure.autolayout": False, "figure.constrained_layout.use": False}


def apply_style(context: str = "paper", style: str = "whitegrid") -> None:
    """Seaborn theme for every figure (``context`` and ``style`` are seaborn's names)."""
    sns.set_theme(context=context, style=style, palette="colorblind")
    plt.rcParams.update({"figure.constrained_layout.use": True, "savefig.bbox": "tight"})


def scheme_colors(schemes) -> dict[str, tuple]:
    """A fixed colour per scheme (the same in every figure), extra names after the four."""
    names = [s for s in SCHEME_ORDER if s in schemes] + [s for s in schemes
                                                          if s not in SCHEME_ORDER]
    palette = sns.color_palette("colorblind", max(len(SCHEME_ORDER), len(names)) + 1)
    fixed = {s: palette[i] for i, s in enumerate(SCHEME_ORDER)}
    extra = iter(palette[len(SCHEME_ORDER):])
    return {s: fixed[s] if s in fixed else next(extra) for s in names}


def pair_colors(pairs) -> dict[str, tuple]:
    """A colour per scheme pair "A-B"."""
    palette = sns.color_palette("dark", len(pairs))
    return dict(zip(pairs, palette, strict=True))


def save_figure(fig, outputs: Mapping[str, str | os.PathLike], dpi: int) -> None:
    """Write ``fig`` to each ``{format: path}`` atomically (temporary file, then rename).

    The figure is laid out once for every format: one draw without output at ``dpi`` (on
    an Agg canvas, the figure's own where it has one) runs the constrained layout, the
    tight bounding box (padded by ``savefig.pad_inches``) is taken from it, and each
    format is then printed with that box and no layout engine, so it is drawn once more
    and laid out no more.  ``bbox_inches="tight"`` per format would lay out and draw the
    figure twice for each, which was most of a figure job's time.  The bytes depend only
    on the figure: no wall-clock date is written (:data:`METADATA`).
    """
    unknown = sorted(set(outputs) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown figure format(s) {unknown}; allowed: {list(FORMATS)}")
    try:
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        fig.set_dpi(dpi)
        fig.draw_without_rendering()
        pad = plt.rcParams["savefig.pad_inches"]
        bbox = fig.get_tightbbox(canvas.get_renderer()).padded(pad)
        # no layout engine from here on (savefig restores the figure's engine after
        # printing, which these rcParams keep at none): the layout stays as drawn
        with plt.rc_context(NO_LAYOUT):
            fig.set_layout_engine(None)
            for fmt, path in outputs.items():
                with atomic_path(path, suffix=f".{fmt}") as tmp:
                    fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches=bbox,
                                metadata=METADATA[fmt])
    finally:
        plt.close(fig)


SPREADS = ("minmax", "std")


def seed_band(values, spread: str = "minmax", axis: int = -1):
    """Mean over seeds and the band drawn around it: min–max, or mean ± one std.

    ``values`` (..., seed) → ``(mean, low, high)`` each of shape (...).
    """
    import numpy as np

    if spread not in SPREADS:
        raise ValueError(f"unknown spread {spread!r}; allowed: {list(SPREADS)}")
    v = np.asarray(values, dtype=float)
    mean = v.mean(axis=axis)
    if spread == "minmax":
        return mean, v.min(axis=axis), v.max(axis=axis)
    std = v.std(axis=axis)
    return mean, mean - std, mean + std
