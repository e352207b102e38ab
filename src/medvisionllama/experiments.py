"""Experiments of the pipeline config, expanded into runs.

An experiment rebuilds one table of the paper (its ``kind``) from a grid of runs: tasks × models
× attention × input sizes × seeds (:class:`medvisionllama.paper.spec.ExperimentSpec` knows which
runs each kind needs). Runs are identified by their settings alone, so a run that several
experiments need (ViT on Task01 appears in Tables 2, 3, 4 and Appendix Tables 2 and 3) is trained
once. Snakemake asks this module which runs exist; ``mvl tables`` and ``mvl figures`` ask it which
runs belong to which experiment, so both read the config the same way.

Defaults an experiment takes from the rest of the config: ``tasks: all`` means ``data.tasks``;
no ``sizes`` means the first of ``preprocess.sizes``; no ``seeds`` means ``training.seeds``; no
``llm_for_paper`` means the top-level ``stand_ins`` entries of its models; ``split.folds`` K makes
every run K runs, one per cross-validation fold.

Layer sweeps: an experiment's ``llm_layers: [0, 15, -1]`` turns each LLM model (``<llm>``,
``<llm>-random``, ``<llm>-shuffled``) into one model per layer, ``<llm>[-control]@<layer>``
(negative layers count from the end of the LLM's ``num_hidden_layers``). The name at the LLM's
default layer (``model.llm_layer`` when set, else the registry's: the last layer) is written
without ``@``, so it names the same run as an experiment without a sweep; ``vit`` and ``mlp`` are
not multiplied, so a baseline is trained once. Model names written with ``@<layer>`` are brought
to the same canonical form.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

import yaml

from medvisionllama.errors import InputError
from medvisionllama.paper.spec import ExperimentSpec
from medvisionllama.llm.registry import register_llms
from medvisionllama.tasks import TASKS, check_task_folders, task_info
from medvisionllama.vocabulary import RunKey, parse_model_name, with_layer

__all__ = [
    "active_experiments", "all_runs", "experiment_specs", "expand_layers", "load_config", "load_experiments",
    "runs_of", "sizes_needed",
]


def _llm_layers(llm: str, default: int | None) -> tuple[int, int]:
    """``(num_hidden_layers, default layer index)`` of registry LLM ``llm`` (the registry builds its
    transformers config: only configs that name layers pay for that import)."""
    from medvisionllama.llm.registry import get_spec

    spec = get_spec(llm)
    return spec.num_layers, spec.resolve_layer(default)


def expand_layers(models: Iterable[str], layers: Iterable[int], default_layer: int | None = None,
                  where: str = "experiment", used: dict[str, tuple[int, int]] | None = None) -> tuple[str, ...]:
    """The model names of an experiment with its LLM models once per layer of ``layers`` (empty:
    each LLM model as written), canonical (see the module docstring), duplicates dropped in order.
    ``default_layer``: ``model.llm_layer`` of the config. ``used``, when given, receives for each
    LLM model name ``(layer index, number of layers)``: which layer the name stands for."""
    layers = list(layers)
    out: list[str] = []
    for model in models:
        name = parse_model_name(model)
        if name.kind != "llm" or (not layers and name.layer is None):
            out.append(model)
            continue
        count, default = _llm_layers(name.llm, default_layer)
        wanted = [name.layer] if name.layer is not None else layers
        for layer in wanted:
            index = layer + count if layer < 0 else layer
            if not 0 <= index < count:
                raise InputError(f"{where}: layer {layer} is out of range for {name.llm} ({count} layers: "
                                 f"0..{count - 1}, or -{count}..-1 from the end)")
            canonical = with_layer(name.base, None if index == default else index)
            out.append(canonical)
            if used is not None:
                used[canonical] = (index, count)
    return tuple(dict.fromkeys(out))


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
    folds = (config.get("split") or {}).get("folds")
    default_layer = (config.get("model") or {}).get("llm_layer")
    specs = []
    for name, raw in experiments.items():
        spec: dict[str, Any] = {k: v for k, v in raw.items() if k != "description"}
        if spec.get("tasks", "all") == "all":
            spec["tasks"] = data_tasks
        spec.setdefault("sizes", [sizes[0]])
        spec.setdefault("seeds", seeds)
        spec.setdefault("llm_for_paper", {m: stand_ins[m] for m in spec.get("models", []) if m in stand_ins})
        used: dict[str, tuple[int, int]] = {}
        if "models" in spec:
            models = spec["models"] if isinstance(spec["models"], list) else [spec["models"]]
            layers = spec.get("llm_layers") or []
            try:
                spec["models"] = list(expand_layers([str(m) for m in models],
                                                    [v for v in (layers if isinstance(layers, list) else [layers])
                                                     if isinstance(v, int) and not isinstance(v, bool)],
                                                    default_layer, f"config: experiment {name!r}", used))
            except InputError as exc:
                message = str(exc)
                raise InputError(message if message.startswith("config:") else f"config: experiment {name!r}: {message}") from None
            spec["llm_for_paper"] = {k: v for k, v in spec["llm_for_paper"].items() if k in spec["models"]}
        parsed = dataclasses.replace(ExperimentSpec.from_dict(name, spec), folds=folds, model_layers=used)
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
