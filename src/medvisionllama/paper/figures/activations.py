"""Figure 4: feature activation maps at V_E, V_LLM and V_D.

The statistic drawn is the one ``mvl evaluate`` stores in ``samples.npz``: at each voxel of the
slice, the mean over channels of the absolute feature value (``act_V_E`` ...). Scale: one per
stage (row), shared by the models, from 0 to the largest value of that stage over the models
shown (:func:`stage_limits`), so that a colour means the same value in every panel of a row and
contrast is proportional (a map that varies by 10 % looks nearly uniform, as it should); each
panel also prints its own minimum and maximum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np

from medvisionllama.errors import InputError
from medvisionllama.paper.figures import base
from medvisionllama.paper.figures.segmentation import draw_classes
from medvisionllama.paper.outputs.figures import FIGURE4
from medvisionllama.paper.published import model_label, model_style

Sample = Mapping[str, np.ndarray]
ACTIVATION_LEVELS = (("act_V_E", "$V_E$ (encoder)"), ("act_V_LLM", "$V_{LLM}$ (LLM block)"),
                     ("act_V_D", "$V_D$ (decoder)"))
STATISTIC = "channel mean of |activation|"


def stage_limits(samples: Mapping[str, Sample], key: str) -> tuple[float, float]:
    """The colour scale of one stage: 0 to the largest value of ``key`` over every model that has it."""
    values = [float(np.nanmax(np.abs(np.asarray(s[key], dtype=float)))) for s in samples.values() if key in s]
    top = max(values, default=1.0)
    return 0.0, top if top > 0 else 1.0


@base.styled
def figure_activation_maps(samples: Mapping[str, Sample], stem: str | Path, stamp: str | None = None) -> base.FigureOutput:
    """Figure 4. ``samples``: model name -> samples.npz of the same test case (first = the
    baseline). Top: the input slice with the ground truth outlined per class; below, one column per
    model and one row per stage, each row on its own scale (:func:`stage_limits`). Models without
    V_LLM show an empty panel."""
    if not samples:
        raise InputError("figure 4: no samples given")
    models = list(samples)
    first = samples[models[0]]
    label = np.asarray(first["label"])
    classes = sorted(int(k) for k in set(np.unique(label)) - {0})
    n = len(models)
    panel = min(1.9, (base.PAGE_INCHES[0] - 1.4) / n)
    fig = plt.figure(figsize=(panel * n + 1.4, panel * 4 + 0.6), layout="constrained")
    grid = fig.add_gridspec(4, n)
    top = fig.add_subplot(grid[0, :])
    draw_classes(top, np.asarray(first["image"])[0], label, None, classes)
    case = str(np.asarray(first["case_id"])) if "case_id" in first else "?"
    where = f", slice {int(np.asarray(first['slice_index']))}" if "slice_index" in first else ""
    top.set_title(f"Input: case {case}{where}, channel 0 (outline: ground truth per class)")
    top.axis("off")
    panels = 1
    for i, (key, name) in enumerate(ACTIVATION_LEVELS, start=1):
        vmin, vmax = stage_limits(samples, key)
        row, image = [], None
        for j, model in enumerate(models):
            ax = fig.add_subplot(grid[i, j])
            row.append(ax)
            panels += 1
            ax.set_xticks([])
            ax.set_yticks([])
            if key in samples[model]:
                a = np.abs(np.asarray(samples[model][key], dtype=float))
                image = ax.imshow(a.T, cmap="viridis", vmin=vmin, vmax=vmax, origin="lower")
                ax.contour((label > 0).T.astype(float), levels=[0.5], colors="white", linewidths=0.7, origin="lower")
                ax.text(0.02, 0.02, f"{a.min():.2g}–{a.max():.2g}", transform=ax.transAxes, fontsize=base.MIN_FONT_PT,
                        color="white", va="bottom", bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.8, "linewidth": 0})
            else:
                ax.text(0.5, 0.5, "no $V_{LLM}$\n(no LLM block)", ha="center", va="center",
                        transform=ax.transAxes, color="0.35")
                ax.set_facecolor("0.95")
                ax.set_box_aspect(label.shape[1] / label.shape[0])
            if i == 1:
                ax.set_title(model_label(model), color=model_style(model)[0])
            if j == 0:
                ax.set_ylabel(name)
        if image is not None:
            fig.colorbar(image, ax=row, shrink=0.9, label=f"{STATISTIC}\n(0 to the stage's max)")
    fig.suptitle(f"{FIGURE4.title}: {STATISTIC}, one scale per stage")
    note = (f"Case: the first test case of the split; slice: the axial slice with the most ground-truth foreground "
            f"(the same for every model). Each map: the {STATISTIC} at that stage, resampled to the input grid; "
            "colour scale per row from 0 to the largest value of the stage over the models shown; the corner "
            "gives the panel's own range; white outline: ground-truth foreground.")
    return base.save(fig, stem, panels, stamp, notes=(note,))
