"""What every figure shares: the house style (fonts of at least :data:`MIN_FONT_PT` at the size
the figure is made for, TrueType fonts embedded in the PDF), saving as PNG and PDF atomically with
the notes and configuration stamp under the image, and the :class:`FigureOutput` record the tests
read (texts, legend colours, size, smallest font)."""

from __future__ import annotations

import functools
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import numpy as np  # noqa: E402

from medvisionllama.io_utils import atomic_path  # noqa: E402
from medvisionllama.paper.compare import configuration_differences  # noqa: E402
from medvisionllama.paper.spec import ExperimentSpec  # noqa: E402
from medvisionllama.paper.summary import ExperimentScores  # noqa: E402
from medvisionllama.paper.tables import default_provenance  # noqa: E402

#: the printable area of a US-letter page with 0.75 in margins (inches): every figure is made at
#: most this wide (and the page-sized ones this tall), so its fonts print at their stated size
PAGE_INCHES = (7.0, 9.5)
#: the smallest font any figure uses (points, at the size the figure is made for)
MIN_FONT_PT = 7.0
STAMP_FONTSIZE = MIN_FONT_PT
DPI = 200

#: the house style, applied while a figure is drawn and saved (:func:`styled`): Type 42 (TrueType)
#: fonts in PDF and PostScript (publishers' checks reject Type 3), sizes from 7 pt up
STYLE: dict[str, Any] = {
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
    "font.family": "DejaVu Sans", "mathtext.fontset": "dejavusans",
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7.5, "figure.titlesize": 9.5,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": False, "lines.linewidth": 1.2,
    "savefig.dpi": DPI,
}

F = TypeVar("F", bound=Callable[..., Any])


def styled(function: F) -> F:
    """Draw and save ``function``'s figure in :data:`STYLE`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class FigureOutput:
    paths: list[Path]  #: the PNG and the PDF
    n_panels: int  #: axes holding data (figure-level legends not counted)
    texts: list[str] = field(default_factory=list)  #: every text artist of the figure (titles, labels, stamp)
    legend_colors: dict[str, str] = field(default_factory=dict)  #: legend entry -> its colour (``#rrggbb``)
    size_inches: tuple[float, float] = (0.0, 0.0)  #: the saved image (bounding box included), width x height
    min_font_pt: float = 0.0  #: the smallest font of any visible text


def legend_colors(fig: plt.Figure) -> dict[str, str]:
    """Each legend entry's colour, read from the legend handles the figure really drew."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    out: dict[str, str] = {}
    for legend in legends:
        for handle, text in zip(legend.legend_handles, legend.texts):
            if isinstance(handle, matplotlib.lines.Line2D):
                color = handle.get_markerfacecolor() if handle.get_linestyle() in ("None", "none", "") else handle.get_color()
            elif hasattr(handle, "get_facecolor"):
                faces = np.atleast_2d(handle.get_facecolor())
                if not len(faces):
                    continue
                color = faces[0]
            else:
                continue
            out[text.get_text()] = matplotlib.colors.to_hex(color)
    return out


def footer(fig: plt.Figure, text: str, **style: Any) -> None:
    """``text`` under everything the figure holds (legends below the axes included), small and
    wrapped to the figure's width (wrapped here, so the layout knows its height)."""
    chars = max(40, int(fig.get_figwidth() * 72 / (STAMP_FONTSIZE * 0.56)))
    if not getattr(fig, "_mvl_frozen", False):  # the first note: lay the figure out once
        fig.draw_without_rendering()  # lays the figure out (constrained layout) first
        fig.set_layout_engine("none")  # then freezes it: the notes go under what was laid out
        for legend in fig.legends:  # pinned where the layout put them (a tight save re-anchors figure legends)
            where = legend.get_window_extent().transformed(fig.transFigure.inverted())
            legend.set_bbox_to_anchor(where, transform=fig.transFigure)
            legend.set_loc("center")
        fig._mvl_frozen = True  # a later note goes under this one, without another layout
    box = fig.get_tightbbox()  # inches, figure origin
    bottoms = [box.y0] + [legend.get_window_extent().y0 / fig.dpi for legend in fig.legends]  # outside legends too
    x = box.x0 / fig.get_figwidth()
    y = min(0.0, min(bottoms) / fig.get_figheight()) - 0.01
    fig.text(max(x, 0.0), y, textwrap.fill(text, chars), ha="left", va="top", fontsize=STAMP_FONTSIZE, **style)


def _visible_texts(fig: plt.Figure) -> list[matplotlib.text.Text]:
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]


def save(fig: plt.Figure, stem: str | Path, n_panels: int, stamp: str | None = None,
         notes: tuple[str, ...] = ()) -> FigureOutput:
    """Save ``fig`` as PNG and PDF. ``notes`` (what the figure shows and how it was chosen) and
    then ``stamp`` (the configuration stamp) are written under the figure, small and wrapped, so
    that a copy of the image still says what it shows."""
    stem = Path(stem)
    for note in notes:
        footer(fig, note)
    if stamp:
        footer(fig, stamp, color="#8b0000")
    fig.draw_without_rendering()
    shown = _visible_texts(fig)
    texts = [t.get_text() for t in shown]
    texts += [" ".join(t.split("\n")) for t in texts if "\n" in t]  # wrapped texts as one line too
    smallest = min((float(t.get_fontsize()) for t in shown), default=0.0)
    colors = legend_colors(fig)
    # the tight box (what savefig's bbox_inches="tight" computes by drawing once more per format),
    # taken once from the layout just drawn and given to both formats
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
    paths = []
    for ext in ("png", "pdf"):
        target = stem.with_name(f"{stem.name}.{ext}")
        with atomic_path(target, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI, bbox_inches=box, metadata=_metadata(ext))
        paths.append(target)
    height, width = plt.imread(paths[0]).shape[:2]
    size = (width / DPI, height / DPI)
    plt.close(fig)
    return FigureOutput(paths, n_panels, texts, colors, size, smallest)


def _metadata(ext: str) -> dict[str, Any]:
    """No creation date in the PDF, so the same figure gives the same bytes."""
    return {"CreationDate": None} if ext == "pdf" else {}


def configuration_stamp(specs: list[ExperimentSpec], scored: Mapping[str, ExperimentScores],
                        provenance: Mapping[str, Any]) -> str | None:
    """The stamp of a figure drawn from ``specs``: the tables' differences from the paper's setup
    (:func:`configuration_differences`, once each), input sizes and seeds; ``None`` when the
    configuration is the paper's (no stamp)."""
    parts: list[str] = []
    for spec in specs:
        parts += configuration_differences(spec, default_provenance(scored[spec.name], dict(provenance)))
    parts = list(dict.fromkeys(parts))
    if not parts:
        return None
    sizes = ", ".join(dict.fromkeys(size for spec in specs for size in spec.sizes))
    seeds = ", ".join(str(s) for s in sorted({seed for spec in specs for seed in spec.seeds}))
    return ("NOT the paper's configuration: " + "; ".join(parts) + f". Input size {sizes}; seeds {seeds}. "
            "These numbers are not the paper's.")
