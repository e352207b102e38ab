"""Experiments of the pipeline config, expanded into runs.

An experiment rebuilds one table of the paper (its ``kind``) from a grid of runs: tasks × models
× attention × input sizes × seeds (:class:`medvisionllama.paper.spec.ExperimentSpec` knows which
runs each kind needs). Runs are identified by their settings alone, so a run that several
experiments need (ViT on Task01 appears in Tables 2, 3, 4 and Appendix Tables 2 and 3) is trained
once. Snakemake asks this module which runs exist; ``mvl tables`` and ``mvl figures`` ask it which
runs belong to which experiment, so both read the config the same way.

Defaults an experiment takes from the rest of the config: ``tasks: all`` means ``data.tasks``;
no ``sizes`` means the first of ``preprocess.sizes``; no ``seeds`` means ``training.seeds``; no
``llm_for_paper`` means the top-level ``stand_ins`` entries of its models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from medvisionllama.errors import InputError
from medvisionllama.paper.spec import ExperimentSpec
from medvisionllama.llm.registry import register_llms
from medvisionllama.tasks import TASKS, check_task_folders, task_info
from medvisionllama.vocabulary import RunKey, parse_model_name

__all__ = [
    "active_experiments", "all_runs", "experiment_specs", "load_config", "load_experiments", "runs_of", "sizes_needed",
]


def active_experiments(config: dict) -> dict[str, dict]:
    """The experiments of the config, less those set to ``null`` (how a ``--configfile`` layered
    on top of config.yaml switches one off: Snakemake merges config files key by key)."""
    return {name: spec for name, spec in (config.get("experiments") or {}).items() if spec is not None}


def experiment_specs(config: dict, names: Iterable[str] | None = None, *,
                     require_folders: bool = True) -> list[ExperimentSpec]:
    """The active experiments of ``config`` (optionally only ``names``), defaults filled in.
    ``require_folders``: the config's LLM folders must exist here (not for readers of results)."""
    register_llms(config.get("llms"), require_folders=require_folders)  # its LLM folders are model names
    experiments = active_experiments(config)
    if names is not None:
        names = list(names)
        missing = [n for n in names if n not in experiments]
        if missing:
            raise InputError(f"config: no experiments {missing}; defined: {', '.join(experiments) or 'none'}")
        experiments = {n: experiments[n] for n in names}
    data_tasks = [task_info(t).name for t in config.get("data", {}).get("tasks", list(TASKS))]
    if config.get("data", {}).get("dir"):  # a folder named like an MSD task must hold that task
        check_task_folders(config["data"]["dir"], data_tasks)
    known_sizes = config.get("preprocess", {}).get("sizes")  # None: a config of experiments only
    sizes = known_sizes or ["64x64x40"]
    seeds = config.get("training", {}).get("seeds", [0])
    stand_ins = config.get("stand_ins") or {}
    specs = []
    for name, raw in experiments.items():
        spec: dict[str, Any] = {k: v for k, v in raw.items() if k != "description"}
        if spec.get("tasks", "all") == "all":
            spec["tasks"] = data_tasks
        spec.setdefault("sizes", [sizes[0]])
        spec.setdefault("seeds", seeds)
        spec.setdefault("llm_for_paper", {m: stand_ins[m] for m in spec.get("models", []) if m in stand_ins})
        parsed = ExperimentSpec.from_dict(name, spec)
        for model in parsed.models:
            try:
                parse_model_name(model)
            except InputError as exc:
                raise InputError(f"config: experiment {name!r}: {exc}") from None
        outside = [t for t in parsed.tasks if t not in data_tasks]
        if outside:
            raise InputError(f"config: experiment {name!r} uses tasks {outside} that are not in data.tasks")
        unknown_sizes = [s for s in parsed.sizes if known_sizes is not None and s not in known_sizes]
        if unknown_sizes:
            raise InputError(
                f"config: experiment {name!r} uses input sizes {unknown_sizes} that are not in preprocess.sizes"
            )
        specs.append(parsed)
    return specs


def runs_of(specs: Iterable[ExperimentSpec]) -> list[RunKey]:
    """Every distinct run of ``specs``, each once (a run shared by experiments is trained once), sorted."""
    return sorted({run for spec in specs for run in spec.required_runs()})


def all_runs(config: dict, names: Iterable[str] | None = None) -> list[RunKey]:
    """Every distinct run of the named experiments of ``config`` (default: all active ones)."""
    return runs_of(experiment_specs(config, names, require_folders=False))  # names only: no folder read


def sizes_needed(config: dict) -> dict[str, list[str]]:
    """The input sizes each task is preprocessed at: those the runs of the active experiments use.

    Returns ``{task: [size, ...]}`` in the order of ``data.tasks`` and ``preprocess.sizes`` (sizes no
    list names last, in the order found); a task no run reads is absent. The paper's grid reads
    ``full`` on Task01 only, so no other task gets a full-resolution copy.
    """
    runs = all_runs(config)
    tasks = [task_info(t).name for t in config.get("data", {}).get("tasks", list(TASKS))]
    order = list(config.get("preprocess", {}).get("sizes") or [])
    needed: dict[str, set[str]] = {}
    for run in runs:
        needed.setdefault(run.task, set()).add(run.size)
    rank = {size: i for i, size in enumerate(order)}
    return {
        task: sorted(needed[task], key=lambda size: (rank.get(size, len(rank)), size))
        for task in tasks
        if task in needed
    }


def load_config(config_path: str | Path) -> dict[str, Any]:
    """A pipeline config file (YAML mapping), e.g. the resolved ``results/config.yaml``."""
    path = Path(config_path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    with path.open() as handle:
        try:
            config = yaml.safe_load(handle) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    register_llms(config.get("llms"), require_folders=False)  # a stage's LLM folders (llms:) are model names
    return config


def load_experiments(config_path: str | Path, names: list[str] | None = None) -> list[ExperimentSpec]:
    """The experiments of a pipeline config file (key ``experiments:``), optionally only ``names``,
    defaults filled from the rest of the config as for the workflow (:func:`experiment_specs`)."""
    config = load_config(config_path)
    if not config.get("experiments"):
        raise InputError(f"{config_path}: no 'experiments:' key")
    try:
        return experiment_specs(config, names, require_folders=False)  # tables, figures: results only
    except InputError as exc:
        raise InputError(f"{config_path}: {exc}") from None
