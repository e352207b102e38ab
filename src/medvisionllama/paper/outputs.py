"""The file names ``mvl tables`` and ``mvl figures`` write, without importing pandas or
matplotlib: Snakemake reads them at parse time (on the login node and in every cluster job)."""

from __future__ import annotations

from medvisionllama.paper.spec import ExperimentSpec


def first_of_kind(specs: list[ExperimentSpec], *kinds: str) -> ExperimentSpec | None:
    """The first experiment of the first of ``kinds`` that the config has, else None."""
    for kind in kinds:
        for s in specs:
            if s.kind == kind:
                return s
    return None


def experiment_outputs(spec: ExperimentSpec) -> list[str]:
    """File names ``mvl tables`` writes for one experiment (for Snakemake ``output:``)."""
    n = spec.name
    return ([f"{n}.{e}" for e in ("csv", "md", "tex", "html")]
            + [f"{n}_comparison.{e}" for e in ("csv", "md", "tex", "html")]
            + [f"{n}_claims.{e}" for e in ("csv", "md", "html")])


def figure_outputs(specs: list[ExperimentSpec]) -> list[str]:
    """File names ``mvl figures`` writes for these experiments (for Snakemake ``output:``)."""
    stems = []
    if first_of_kind(specs, "main"):
        stems += ["fig3_training_curves", "fig4_activation_maps"]
    if first_of_kind(specs, "llm_comparison", "main"):
        stems += ["fig5_segmentations", "appfig2_segmentations", "appfig3_radar"]
    if first_of_kind(specs, "attention_strategy"):
        stems.append("appfig1_attention_strategies")
    stems.append("published_vs_reproduced")
    return [f"{s}.{e}" for s in stems for e in ("png", "pdf")]
