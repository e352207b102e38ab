"""The claims drawn: a forest plot per experiment from its ``{experiment}_claims.csv``.

One panel per comparison (model pair and metric: the rows of one claim family); in it one row
per task and, on top, the cross-task headline. Each tested row shows the effect (mean of a - b)
and its interval, coloured and shaped by the verdict; a "not testable" row (below the testable n,
no interval) shows its raw differences as small crosses instead. The paper's effect (published a
- published b) is an open diamond where the paper prints both numbers; the dashed line is no
difference. Columns read: docs/contracts.md, "Claims (``{experiment}_claims.csv``)".
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import matplotlib.lines
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from medvisionllama.errors import InputError
from medvisionllama.paper.figures import base
from medvisionllama.paper.figures.cases import METRIC_NAMES
from medvisionllama.paper.outputs.base import short_task

#: verdict -> (colour, marker, filled); colour is never the only cue (markers differ)
VERDICT_STYLES: dict[str, tuple[str, str, bool]] = {
    "supported": ("#009e73", "o", True), "contradicted": ("#d55e00", "s", True),
    "inconclusive": ("#555555", "o", False), "not testable": ("#0072b2", "x", True),
}
FAMILY_ORDER = ("primary", "secondary-metrics", "per-task", "control")
REQUIRED = ("experiment", "task", "metric", "a", "b", "effect", "ci_low", "ci_high", "n", "verdict")


def read_claims(path: str | Path) -> pd.DataFrame:
    """A claims CSV (``mvl tables``; ``# `` header and footer lines skipped) in the round-2
    columns; an older file without ``family``, ``paper_effect``, ``p_adjusted`` or
    ``differences`` gets them derived (``headline``, the published values, ``p_holm``, none)."""
    path = Path(path)
    try:
        text = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
        claims = pd.read_csv(io.StringIO(text), keep_default_na=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the claims ({exc})") from exc
    missing = [c for c in REQUIRED if c not in claims.columns]
    if missing:
        raise InputError(f"{path}: the claims lack columns {missing}")
    return normalise_claims(claims)


def normalise_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """The columns the forest plot reads, derived where an older claims table lacks them."""
    c = claims.copy()
    headline = c["headline"].astype(str).str.lower().isin(["true", "1"]) if "headline" in c else c["task"].eq("all")
    c["headline"] = headline | c["task"].isin(["all", "ALL"])
    if "family" not in c:
        c["family"] = np.where(c["headline"], "primary", "per-task")
    if "paper_effect" not in c:
        c["paper_effect"] = (pd.to_numeric(c["published_a"], errors="coerce") - pd.to_numeric(c["published_b"], errors="coerce")
                             if {"published_a", "published_b"} <= set(c) else np.nan)
    if "p_adjusted" not in c:
        c["p_adjusted"] = c["p_holm"] if "p_holm" in c else np.nan
    if "differences" not in c:
        c["differences"] = ""
    for col in ("effect", "ci_low", "ci_high", "paper_effect", "p_adjusted", "n"):
        c[col] = pd.to_numeric(c[col], errors="coerce")
    c["differences"] = c["differences"].fillna("").astype(str)
    c["verdict"] = c["verdict"].fillna("not testable").astype(str)
    return c


def differences(text: str) -> list[float]:
    """The raw differences of a "not testable" row (``;``-separated)."""
    return [float(v) for v in str(text).split(";") if v.strip() and v.strip().lower() != "nan"]


def _panels(claims: pd.DataFrame) -> list[pd.DataFrame]:
    """One frame per comparison (a, b, metric), in family order, headline first in each."""
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    keyed = claims.assign(_family=claims["family"].map(lambda f: order.get(f, len(order))), _pos=range(len(claims)))
    first = keyed.groupby(["a", "b", "metric"], sort=False)[["_family", "_pos"]].min().sort_values(["_family", "_pos"])
    return [keyed[(keyed["a"] == a) & (keyed["b"] == b) & (keyed["metric"] == m)]
            .sort_values(["headline", "_pos"], ascending=[False, True]) for a, b, m in first.index]


def _row_labels(panel: pd.DataFrame) -> list[str]:
    """``All tasks`` for the headline, the short task otherwise; where a task has several rows
    (claims at several input sizes), the claim's ``at {size}`` too."""
    labels = ["All tasks" if r["headline"] else short_task(str(r["task"])) for _, r in panel.iterrows()]
    if len(set(labels)) < len(labels):
        at = panel["claim"].astype(str).str.extract(r" at (\S+)$")[0].fillna("") if "claim" in panel else None
        if at is not None:
            labels = [f"{lab} {a}".strip() for lab, a in zip(labels, at)]
    return labels


@base.styled
def figure_forest(claims: pd.DataFrame, stem: str | Path, title: str, stamp: str | None = None) -> base.FigureOutput:
    """The forest plot of one experiment's claims (:func:`normalise_claims` columns)."""
    if claims.empty:
        raise InputError(f"{title}: no claims to draw")
    claims = normalise_claims(claims)
    panels = _panels(claims)
    rows = sum(len(p) for p in panels)
    pitch = max(0.13, min(0.22, (base.PAGE_INCHES[1] - 1.6 - 0.45 * len(panels)) / rows))
    heights = [len(p) * pitch + 0.5 for p in panels]
    columns = 2 if 1.2 + sum(heights) > base.PAGE_INCHES[1] - 1.0 else 1  # too tall for a page: two columns
    n_rows = math.ceil(len(panels) / columns)
    row_heights = [max(heights[r * columns:(r + 1) * columns]) for r in range(n_rows)]
    fig, axes = plt.subplots(n_rows, columns, squeeze=False, layout="constrained",
                             figsize=(base.PAGE_INCHES[0] * (0.8 if columns == 1 else 1.0), 1.2 + sum(row_heights)),
                             gridspec_kw={"height_ratios": row_heights})
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        y = np.arange(len(panel))[::-1]
        for yi, (_, row) in zip(y, panel.iterrows()):
            color, marker, filled = VERDICT_STYLES.get(row["verdict"], ("0.5", "o", False))
            if row["verdict"] == "not testable" or np.isnan(row["ci_low"]):
                raw = differences(row["differences"])
                ax.plot(raw, [yi] * len(raw), ls="none", marker="x", ms=3.5, color=VERDICT_STYLES["not testable"][0])
                if not raw and np.isfinite(row["effect"]):
                    ax.plot([row["effect"]], [yi], ls="none", marker="x", ms=4, color=color)
            else:
                ax.hlines(yi, row["ci_low"], row["ci_high"], color=color, lw=1.5)
                ax.plot([row["effect"]], [yi], ls="none", marker=marker, ms=5 if row["headline"] else 4,
                        color=color, mfc=color if filled else "white", mew=1.1)
            if np.isfinite(row["paper_effect"]):
                ax.plot([row["paper_effect"]], [yi], ls="none", marker="D", ms=4.5, mfc="none", mec="black", mew=0.8)
            p = row["p_adjusted"]
            verdict = row["verdict"] + (f", p={p:.2g}" if np.isfinite(p) else "")
            ax.annotate(f"{verdict} (n={int(row['n']) if np.isfinite(row['n']) else '?'})", (1.01, yi),
                        xycoords=("axes fraction", "data"), va="center", fontsize=base.MIN_FONT_PT, color=color,
                        annotation_clip=False)
        ax.axvline(0, color="0.4", lw=0.8, ls="--", zorder=0)
        ax.set_yticks(y, _row_labels(panel))
        for tick, (_, r) in zip(ax.get_yticklabels(), panel.iterrows()):
            if r["headline"]:
                tick.set_fontweight("bold")
        ax.set_ylim(-0.7, len(panel) - 0.3)
        first = panel.iloc[0]
        metric = METRIC_NAMES.get(str(first["metric"]), str(first["metric"]))
        lower = str(first.get("better", "")).startswith("lower") or first["metric"] == "hd95"
        ax.set_title(textwrap.fill(f"{first['a']} − {first['b']}: {metric} ({'lower' if lower else 'higher'} is better)",
                                   80 // columns), loc="left")
        ax.set_xlabel(f"Difference in {metric} (a − b)")
        ax.grid(axis="x", alpha=0.3, lw=0.5)
    handles = [matplotlib.lines.Line2D([], [], color=c, marker=m, mfc=c if f else "white", ls="-" if v != "not testable" else "none",
                                       label=v if v != "not testable" else "not testable: raw differences")
               for v, (c, m, f) in VERDICT_STYLES.items()]
    handles.append(matplotlib.lines.Line2D([], [], ls="none", marker="D", mfc="none", mec="black", label="paper's effect"))
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(title)
    note = ("Each row: the effect (mean of a − b) and its interval (see the claims table's method note), coloured by "
            "the verdict; p: adjusted for multiplicity; n: the units the test counts (cases, seeds or tasks). "
            "'All tasks': the cross-task headline. Not testable rows show each raw difference instead of an interval.")
    return base.save(fig, stem, len(panels), stamp, notes=(note,))
