"""Experiments of the config, expanded into runs.

An experiment (one table or figure of the paper) names tasks, input sizes, seeds and model
variants; each combination is a *run*. Runs are identified by their settings alone, so a run that
several experiments need (ViT on Task01 appears in Tables 2, 3, 4 and Appendix Tables 2 and 3) is
trained once. Snakemake asks this module which runs exist; the table builders ask it which runs
belong to which experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from medvisionllama.errors import InputError
from medvisionllama.tasks import TASKS, get_task, parse_size

DEFAULT_ATTENTION = "hybrid-sequential"
ATTENTIONS = ("hybrid-sequential", "hybrid-parallel", "hybrid-interleaved", "spatial")


@dataclass(frozen=True, order=True)
class Run:
    """One training run: the wildcards of the ``train_run`` rule."""

    task: str
    model: str
    attention: str
    size: str
    seed: int

    @property
    def path(self) -> str:
        """Run folder relative to the results folder."""
        return f"runs/{self.task}/{self.model}/{self.attention}/{self.size}/seed{self.seed}"


def _tasks(value: Any, config: dict) -> list[str]:
    if value in (None, "all"):
        return list(config["data"]["tasks"])
    return [get_task(t).name for t in value]


def experiment_runs(config: dict, name: str) -> list[Run]:
    """The runs of experiment ``name`` of a validated config, in table order."""
    experiments = active_experiments(config)
    if name not in experiments:
        raise InputError(f"config: no experiment {name!r}; defined: {', '.join(experiments) or 'none'}")
    spec = experiments[name]
    tasks = _tasks(spec.get("tasks"), config)
    unknown = [t for t in tasks if t not in config["data"]["tasks"]]
    if unknown:
        raise InputError(
            f"config: experiment {name!r} uses tasks {unknown} that are not in data.tasks; add them there"
        )
    sizes = spec.get("sizes") or [config["preprocess"]["sizes"][0]]
    missing = [s for s in sizes if s not in config["preprocess"]["sizes"]]
    if missing:
        raise InputError(
            f"config: experiment {name!r} uses input sizes {missing} that are not in preprocess.sizes"
        )
    for size in sizes:
        parse_size(size)
    seeds = spec.get("seeds") or config["training"]["seeds"]
    runs = []
    for task in tasks:
        for size in sizes:
            for variant in spec["variants"]:
                attention = variant.get("attention", DEFAULT_ATTENTION)
                if attention not in ATTENTIONS:
                    raise InputError(
                        f"config: experiment {name!r}: unknown attention {attention!r}; expected one of {ATTENTIONS}"
                    )
                for seed in seeds:
                    runs.append(Run(task, variant["model"], attention, size, int(seed)))
    return runs


def active_experiments(config: dict) -> dict[str, dict]:
    """The experiments of the config, less those set to ``null`` (how a ``--configfile`` layered
    on top of config.yaml switches one off: Snakemake merges config files key by key)."""
    return {name: spec for name, spec in config.get("experiments", {}).items() if spec is not None}


def all_runs(config: dict, names: Iterable[str] | None = None) -> list[Run]:
    """Every distinct run of the named experiments (default: all active ones), each once, sorted."""
    names = list(active_experiments(config) if names is None else names)
    return sorted({run for name in names for run in experiment_runs(config, name)})


def check_tasks(config: dict) -> None:
    """Fail early, naming the setting, when the config names an unknown task."""
    for name in config["data"]["tasks"]:
        if name not in TASKS:
            raise InputError(f"config: data.tasks: unknown task {name!r}; expected one of {', '.join(TASKS)}")
