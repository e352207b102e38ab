"""The paper's figures as output objects: each one's file stem, title and the experiment it is
drawn from (the drawing itself is :mod:`medvisionllama.paper.figures`, which imports matplotlib)."""

from __future__ import annotations

from medvisionllama.paper.outputs.base import PaperFigure

FIGURE3 = PaperFigure("fig3_training_curves", "Training curves (Figure 3)", ("main",))
FIGURE4 = PaperFigure("fig4_activation_maps", "Feature activation maps (Figure 4)", ("main",))
FIGURE5 = PaperFigure("fig5_segmentations", "Segmentations per LLM block (Figure 5)", ("llm_comparison", "main"))
APPENDIX_FIGURE2 = PaperFigure("appfig2_segmentations", "Segmentations across tasks (Appendix Figure 2)",
                               ("llm_comparison", "main"))
APPENDIX_FIGURE3 = PaperFigure("appfig3_radar", "Appendix Figure 3", ("llm_comparison", "main"))
APPENDIX_FIGURE1 = PaperFigure("appfig1_attention_strategies", "Hybrid attention strategies (Appendix Figure 1)",
                               ("attention_strategy",))
PUBLISHED_VS_REPRODUCED = PaperFigure("published_vs_reproduced", "Reproduced vs published Dice per task and model")

#: in the order they are drawn and listed
FIGURES: tuple[PaperFigure, ...] = (FIGURE3, FIGURE4, FIGURE5, APPENDIX_FIGURE2, APPENDIX_FIGURE3, APPENDIX_FIGURE1,
                                    PUBLISHED_VS_REPRODUCED)
