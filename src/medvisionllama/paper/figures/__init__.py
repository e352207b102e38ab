"""``mvl figures``: the paper's figures from the long table, the claims, the training curves and
samples.npz. One module per figure concept, each ``figure_*`` function taking in-memory data and
an output stem, saving ``{stem}.png`` and ``{stem}.pdf`` (TrueType fonts, at least 7 pt at the
size made for) and returning a :class:`FigureOutput`:

* :mod:`.curves` - Figure 3 (every task of the main experiment, band over seeds) and each
  experiment's training curves (``{experiment}_curves``).
* :mod:`.activations` - Figure 4: one documented scale per stage.
* :mod:`.segmentation` - Figure 5 / Appendix Figure 2: per-class colours (colour-blind safe),
  prediction filled and ground truth outlined, class names from dataset.json.
* :mod:`.cases` - per-case Dice and HD95 per task and run group (``{experiment}_cases``) and
  Appendix Figure 1, the paper's mean ± sd behind the points.
* :mod:`.metrics` - Appendix Figure 3 as dot plots, and the radar as a look-alike.
* :mod:`.forest` - the claims of each experiment as a forest plot (``{experiment}_forest``).
* :mod:`.reproduced` - reproduced vs published Dice, one point per run.

Every model has one colour and marker in every figure (:func:`medvisionllama.paper.published.model_style`),
and every figure of a run that is not the paper's configuration carries the configuration stamp.
"""

from __future__ import annotations

from medvisionllama.paper.figures.activations import ACTIVATION_LEVELS, figure_activation_maps, stage_limits
from medvisionllama.paper.figures.base import (
    DPI, MIN_FONT_PT, PAGE_INCHES, STYLE, FigureOutput, configuration_stamp, save,
)
from medvisionllama.paper.figures.cases import figure_attention_strategies, figure_case_scores
from medvisionllama.paper.figures.cli import load_class_names, load_samples, main, write_figures
from medvisionllama.paper.figures.curves import figure_experiment_curves, figure_training_curves
from medvisionllama.paper.figures.forest import VERDICT_STYLES, figure_forest, normalise_claims, read_claims
from medvisionllama.paper.figures.metrics import (
    RADAR_HD95_RANGE_MM, figure_metric_dots, figure_radar, mean_interval, radar_values,
)
from medvisionllama.paper.figures.reproduced import figure_published_vs_reproduced, published_vs_reproduced_points
from medvisionllama.paper.figures.segmentation import CLASS_COLORS, class_color, draw_classes, figure_segmentations

__all__ = [
    "ACTIVATION_LEVELS", "CLASS_COLORS", "DPI", "MIN_FONT_PT", "PAGE_INCHES", "RADAR_HD95_RANGE_MM", "STYLE",
    "VERDICT_STYLES", "FigureOutput", "class_color", "configuration_stamp", "draw_classes",
    "figure_activation_maps", "figure_attention_strategies", "figure_case_scores", "figure_experiment_curves",
    "figure_forest", "figure_metric_dots", "figure_published_vs_reproduced", "figure_radar",
    "figure_segmentations", "figure_training_curves", "load_class_names", "load_samples", "main",
    "mean_interval", "normalise_claims", "published_vs_reproduced_points", "radar_values", "read_claims", "save",
    "stage_limits", "write_figures",
]
