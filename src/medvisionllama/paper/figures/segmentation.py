"""Figure 5 and Appendix Figure 2: test-case segmentations that read per class.

Each panel shows one slice of a test case (channel 0 in grey); each foreground class has one
colour of :data:`CLASS_COLORS` (Okabe & Ito's colour-blind-safe set, chosen so that the classes
stay apart under simulated deuteranopia and protanopia: ``tests/test_figure_style.py``). The
prediction of class ``k`` is the filled, translucent region ``pred == k``; the ground truth of
class ``k`` is the solid outline of ``label == k`` in the same colour with a dark rim, so both stay
visible where they overlap. Classes are the real per-class masks (never nested ``label >= k``)
and are named as the task's ``dataset.json`` names them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping

import matplotlib.colors
import matplotlib.lines
import matplotlib.patches
import matplotlib.patheffects
import matplotlib.pyplot as plt
import numpy as np

from medvisionllama.errors import InputError
from medvisionllama.paper.figures import base
from medvisionllama.paper.outputs.base import short_task
from medvisionllama.paper.published import model_label, model_style

Sample = Mapping[str, np.ndarray]
ClassNames = Mapping[str, Mapping[int, str]]  #: task -> label value -> name (dataset.json ``labels``)

#: class 1, 2, 3, 4 (then repeating): Okabe-Ito orange, sky blue, bluish green, blue
CLASS_COLORS: tuple[str, ...] = ("#e69f00", "#56b4e9", "#009e73", "#0072b2")
PRED_ALPHA = 0.45
_OUTLINE = [matplotlib.patheffects.Stroke(linewidth=2.6, foreground="black"), matplotlib.patheffects.Normal()]


def class_color(k: int) -> str:
    """The colour of foreground class ``k`` (1-based label value) in every segmentation figure."""
    if int(k) < 1:
        raise ValueError(f"class {k!r}: the background (0) has no colour")
    return CLASS_COLORS[(int(k) - 1) % len(CLASS_COLORS)]


def draw_classes(ax: plt.Axes, image: np.ndarray, label: np.ndarray, pred: np.ndarray | None,
                 classes: list[int]) -> None:
    """One slice: ``image`` (X, Y) in grey; per class ``k`` of ``classes`` the prediction
    ``pred == k`` filled and the ground truth ``label == k`` outlined, in the class's colour
    (image orientation: ``.T``, origin lower)."""
    ax.imshow(np.asarray(image).T, cmap="gray", origin="lower", interpolation="nearest")
    label = np.asarray(label)
    for k in classes:
        color = matplotlib.colors.to_rgba(class_color(k))
        if pred is not None:
            mask = (np.asarray(pred) == k).T
            if mask.any():
                ax.imshow(np.where(mask[..., None], np.array([*color[:3], PRED_ALPHA]), 0.0), origin="lower",
                          interpolation="nearest")
        truth = (label == k).T
        if truth.any():
            contour = ax.contour(truth.astype(float), levels=[0.5], colors=[color], linewidths=1.3, origin="lower")
            contour.set(path_effects=_OUTLINE)


def class_legend(names: Mapping[int, str]) -> list[matplotlib.artist.Artist]:
    """Legend handles, per class its colour (a filled patch with its outline)."""
    return [matplotlib.patches.Patch(facecolor=matplotlib.colors.to_rgba(class_color(k), PRED_ALPHA),
                                     edgecolor=class_color(k), linewidth=1.3, label=f"{k}: {name}")
            for k, name in sorted(names.items())]


def key_legend() -> list[matplotlib.artist.Artist]:
    """What the fill and the outline mean (one legend per figure)."""
    return [matplotlib.patches.Patch(facecolor=(0.35, 0.35, 0.35, PRED_ALPHA), label="fill: prediction"),
            matplotlib.lines.Line2D([], [], color="0.35", lw=1.3, label="outline: ground truth")]


def case_samples(samples: Sample | list[Sample]) -> dict[str, dict[str, np.ndarray]]:
    """Case id -> that test case's slice (``image`` (1, X, Y), ``label``, ``pred``, ``dice``,
    ``case_id``, ``slice_index``) from one run's ``samples.npz`` (its ``case{i}_*`` arrays), or from
    several (the folds of a cross-validated run: their test cases together). A file written before
    the per-case arrays existed gives its one (first) case."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for sample in samples if isinstance(samples, list) else [samples]:
        i = 0
        while f"case{i}_id" in sample:
            case = str(np.asarray(sample[f"case{i}_id"]))
            out[case] = {"image": sample[f"case{i}_image"], "label": sample[f"case{i}_label"],
                         "pred": sample[f"case{i}_pred"], "dice": sample[f"case{i}_dice"],
                         "case_id": sample[f"case{i}_id"], "slice_index": sample[f"case{i}_slice"]}
            i += 1
        if i == 0 and "case_id" in sample:
            out[str(np.asarray(sample["case_id"]))] = dict(sample)
    return out


def ranked_cases(per_model: Mapping[str, Mapping[str, Sample]]) -> list[tuple[str, float]]:
    """The test cases every model has (``per_model``: model -> :func:`case_samples`), best first by
    the case's Dice averaged over the models (NaN left out; a case with none last), ties by case id."""
    cases = list(per_model.values())
    common = set(cases[0]).intersection(*cases[1:]) if cases else set()
    scored = []
    for case in common:
        values = [float(np.asarray(c[case]["dice"])) for c in cases]
        values = [v for v in values if not np.isnan(v)]
        scored.append((case, float(np.mean(values)) if values else float("nan")))
    return sorted(scored, key=lambda item: (np.isnan(item[1]), -item[1] if not np.isnan(item[1]) else 0.0, item[0]))


def best_median_worst(ranked: list[tuple[str, float]]) -> list[tuple[str, str]]:
    """``(which, case)`` for the best, the median (the better middle one of an even count) and the
    worst of ``ranked`` (:func:`ranked_cases`), each case once (two cases: best and worst)."""
    n, out, seen = len(ranked), [], set()
    for which, index in (("best", 0), ("median", (n - 1) // 2), ("worst", n - 1)):
        if n and index not in seen:
            seen.add(index)
            out.append((which, ranked[index][0]))
    return out


def _column_title(text: str, width: int) -> str:
    """``text`` wrapped at spaces to ``width`` characters, a longer word broken after its hyphens
    (``SmolLM2-`` / ``135M``), so that a title stays over its own narrow panel."""
    lines = []
    for line in textwrap.wrap(text, width, break_long_words=False):
        while len(line) > width and "-" in line[:-1]:
            cut = line.rfind("-", 0, width) if line.rfind("-", 0, width) > 0 else line.find("-")
            lines.append(line[:cut + 1])
            line = line[cut + 1:]
        lines.append(line)
    return "\n".join(lines)


@base.styled
def figure_segmentations(samples: Mapping[tuple[str, str], Sample], tasks: list[str], models: list[str],
                         stem: str | Path, title: str, class_names: ClassNames, stamp: str | None = None,
                         page: tuple[float, float] = base.PAGE_INCHES, row_tasks: Mapping[str, str] | None = None,
                         row_labels: Mapping[str, str] | None = None, note: str | None = None) -> base.FigureOutput:
    """Figure 5 / Appendix Figure 2. ``samples``: (task, model) -> samples.npz; ``class_names``:
    task -> label value -> name, from the task's dataset.json (:func:`load_class_names`). Rows:
    tasks; columns: models; each panel as in :func:`draw_classes` with the case's Dice; each row's
    legend names the task's classes and the case and slice shown. Panels shrink so that the
    figure, notes and stamp included, fits ``page`` (inches) with fonts of 7 pt.

    Rows can be other than tasks (one task's best, median and worst case): then ``tasks`` are the
    row keys, ``row_tasks`` maps each to its task and ``row_labels`` to its label; ``note`` says how
    the cases were chosen (default: the first test case of each task)."""
    row_tasks = dict(row_tasks or {})
    missing = [f"{t}/{m}" for t in tasks for m in models if (t, m) not in samples]
    if missing:
        raise InputError(f"{title}: no samples.npz for {missing}")
    unnamed = [t for t in tasks if row_tasks.get(t, t) not in class_names]
    if unnamed:
        raise InputError(f"{title}: no dataset.json class names for {unnamed} (mvl figures --datasets)")
    legend_w, label_w, title_h = 1.55, 0.3, 0.7
    foot_h = 0.45 + (0.55 if stamp else 0.0)
    panel = min(1.9, (page[0] - legend_w - label_w) / len(models), (page[1] - title_h - foot_h) / len(tasks) - 0.1)
    fig, axes = plt.subplots(len(tasks), len(models), squeeze=False, layout="constrained",
                             figsize=(label_w + legend_w + panel * len(models), title_h + (panel + 0.08) * len(tasks)))
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.01, hspace=0.01)
    for i, row in enumerate(tasks):
        task = row_tasks.get(row, row)
        names = {int(k): v for k, v in class_names[task].items() if int(k) != 0}
        for j, model in enumerate(models):
            s, ax = samples[(row, model)], axes[i, j]
            draw_classes(ax, np.asarray(s["image"])[0], s["label"], s["pred"], sorted(names))
            ax.text(0.03, 0.97, f"Dice {float(np.asarray(s['dice'])):.2f}", transform=ax.transAxes, ha="left",
                    va="top", fontsize=base.MIN_FONT_PT, color="white",
                    bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.0, "linewidth": 0})
            if i == 0:
                ax.set_title(_column_title(model_label(model), max(8, int(panel * 11))), color=model_style(model)[0],
                             fontsize=base.MIN_FONT_PT + 0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel((row_labels or {}).get(row, short_task(task)))
        first = samples[(row, models[0])]
        where = f"case {np.asarray(first['case_id'])}" if "case_id" in first else ""
        if "slice_index" in first:
            where += f", slice {int(np.asarray(first['slice_index']))}"
        axes[i, -1].legend(handles=class_legend(names), loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False,
                           title=where or None, alignment="left", handlelength=1.2, borderaxespad=0.2)
    fig.legend(handles=key_legend(), loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    note = (note or "Each row: one test case (the first of the task's test split).") + (
        " The axial slice with the most ground-truth foreground; colour = class; fill = prediction, outline = "
        "ground truth. Dice: the case's Dice over the whole volume, the mean over its foreground classes.")
    return base.save(fig, stem, axes.size, stamp, notes=(note,))
