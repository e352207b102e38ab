"""The paper's figures as output objects: each one's file stem, title and the experiment it is
drawn from, the per-experiment figures (forest plot of the claims, per-case scores, training
curves), and where each output sits in the Snakemake report (:func:`report_category`: the paper's
order). The drawing itself is :mod:`medvisionllama.paper.figures`, which imports matplotlib."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from medvisionllama.paper.outputs.base import PaperFigure

if TYPE_CHECKING:
    from medvisionllama.paper.spec import ExperimentSpec

FIGURE3 = PaperFigure("fig3_training_curves", "Training curves (Figure 3)", ("main",))
FIGURE4 = PaperFigure("fig4_activation_maps", "Feature activation maps (Figure 4)", ("main",))
FIGURE5 = PaperFigure("fig5_segmentations", "Segmentations per LLM block (Figure 5)", ("llm_comparison", "main"))
APPENDIX_FIGURE1 = PaperFigure("appfig1_attention_strategies", "Hybrid attention strategies (Appendix Figure 1)",
                               ("attention_strategy",))
APPENDIX_FIGURE2 = PaperFigure("appfig2_segmentations", "Segmentations across tasks (Appendix Figure 2)",
                               ("llm_comparison", "main"))
APPENDIX_FIGURE3 = PaperFigure("appfig3_metrics", "Segmentation metrics per model (Appendix Figure 3, as dot plots)",
                               ("llm_comparison", "main"))
APPENDIX_FIGURE3_RADAR = PaperFigure("appfig3_radar", "Appendix Figure 3 (look-alike radar)", ("llm_comparison", "main"))
PUBLISHED_VS_REPRODUCED = PaperFigure("published_vs_reproduced", "Reproduced vs published Dice per task and model")

#: in the order they are drawn and listed
FIGURES: tuple[PaperFigure, ...] = (FIGURE3, FIGURE4, FIGURE5, APPENDIX_FIGURE1, APPENDIX_FIGURE2, APPENDIX_FIGURE3,
                                    APPENDIX_FIGURE3_RADAR, PUBLISHED_VS_REPRODUCED)


@dataclass(frozen=True)
class ExperimentFigure:
    """A figure drawn for every experiment: ``{experiment}_{suffix}.png|pdf``."""

    suffix: str
    title: str
    content: str  #: the report label beside the tables' ``table``, ``comparison``, ``claims``

    def stem(self, experiment: str) -> str:
        return f"{experiment}_{self.suffix}"


FOREST = ExperimentFigure("forest", "The claims tested", "claims (forest plot)")
CASES = ExperimentFigure("cases", "Dice and HD95 per test case", "per-case Dice and HD95")
CURVES = ExperimentFigure("curves", "Training curves of every run", "training curves")
EXPERIMENT_FIGURES: tuple[ExperimentFigure, ...] = (FOREST, CASES, CURVES)

#: the paper's outputs in the order the paper prints them (main text, then appendix)
PAPER_ORDER: tuple[str, ...] = ("Table 2", "Figure 3", "Figure 4", "Table 3", "Table 4", "Figure 5",
                                "Appendix Table 1", "Appendix Figure 1", "Appendix Table 2", "Appendix Figure 2",
                                "Appendix Figure 3", "Appendix Table 3")
_FIGURE_ITEMS = {FIGURE3.stem: "Figure 3", FIGURE4.stem: "Figure 4", FIGURE5.stem: "Figure 5",
                 APPENDIX_FIGURE1.stem: "Appendix Figure 1", APPENDIX_FIGURE2.stem: "Appendix Figure 2",
                 APPENDIX_FIGURE3.stem: "Appendix Figure 3", APPENDIX_FIGURE3_RADAR.stem: "Appendix Figure 3"}


def paper_item(table_name: str) -> str:
    """``table2`` -> ``Table 2``, ``appendix_table1`` -> ``Appendix Table 1`` (a table object's name)."""
    words = table_name.replace("_", " ").replace("table", " table ").split()
    return " ".join(w.capitalize() for w in words)


def report_category(item: str) -> str:
    """The report category of a paper item (``Table 2``, ``Figure 3``): numbered in the paper's
    order, since the report sorts categories by name; anything else comes after them."""
    if item in PAPER_ORDER:
        return f"{PAPER_ORDER.index(item) + 1:02d} {item}"
    return f"{len(PAPER_ORDER) + 1:02d} {item}"


@dataclass(frozen=True)
class FigureFile:
    """One file ``mvl figures`` writes and where the report shows it (PNG only)."""

    name: str  #: file name in the figures folder
    caption: str  #: the caption's stem under workflow/report/
    category: str
    subcategory: str
    labels: tuple[tuple[str, str], ...]


def has_claims(spec: "ExperimentSpec") -> bool:
    """Whether the experiment makes any claim (an experiment of controls only, e.g. a layer sweep of
    ``-random`` blocks, makes none): only then is its forest plot drawn."""
    return bool(spec.table.pairs(spec))


def figure_files(specs: list["ExperimentSpec"]) -> list[FigureFile]:
    """Every file ``mvl figures`` writes for these experiments, with its report placement."""
    out: list[FigureFile] = []
    for figure in FIGURES:
        if figure.wanted(specs):
            category = report_category(_FIGURE_ITEMS.get(figure.stem, "Published vs reproduced"))
            for name in figure.files():
                out.append(FigureFile(name, figure.stem, category, figure.title, (("figure", figure.stem),)))
    for spec in specs:
        category = report_category(paper_item(spec.table.name))
        for figure in EXPERIMENT_FIGURES:
            if figure is FOREST and not has_claims(spec):
                continue
            for ext in ("png", "pdf"):
                out.append(FigureFile(f"{figure.stem(spec.name)}.{ext}", f"experiment_{figure.suffix}", category,
                                      spec.name, (("experiment", spec.name), ("kind", spec.kind),
                                                  ("content", figure.content))))
    from medvisionllama.paper.outputs import layer_sweep  # beyond the paper: Dice per LLM layer

    for name in layer_sweep.figure_files(specs):
        out.append(FigureFile(name, layer_sweep.FIGURE_STEM, report_category("Layer sweep"), "layer_sweep",
                              (("figure", layer_sweep.FIGURE_STEM),)))
    return out
