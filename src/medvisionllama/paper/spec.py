"""Experiment specs: which runs a paper table needs, read from the pipeline's config.

An experiment is one table of the paper, rebuilt from a grid of runs. The config lists them under
``experiments:``, a mapping ``name -> spec``::

    experiments:
      main:
        kind: main                      # layout; defaults to the name
        tasks: [Task01_BrainTumour, Task03_Liver]
        models: [vit, smollm2-135m]     # the first model is the baseline
        attention: [hybrid-sequential]
        sizes: [32x32x16]
        seeds: [0]
        llm_for_paper: {smollm2-135m: llama3.1-8b}   # reproduced model -> paper model it stands in for
        size_for_paper: {32x32x16: 64x64x40}         # only input_size compares sizes with the paper
        llm_layers: [0, 15, -1]         # optional: every LLM model once per decoder layer (a sweep)

``llm_layers`` (negative counts from the end) is expanded by
:func:`medvisionllama.experiments.experiment_specs`: each LLM model name becomes one name per layer,
``<llm>@<layer>``, written without ``@<layer>`` at the LLM's default layer; ``vit`` and ``mlp`` are
not multiplied. ``folds`` is not an experiment key: it is ``split.folds`` of the config, and with
K folds every run of the grid is K runs (``seed{s}-fold{k}``), whose out-of-fold test cases a table
cell pools.

Kinds (the paper table each rebuilds; one object each in :mod:`medvisionllama.paper.outputs`):
``main`` (``table2``), ``llm_comparison`` (``table4``), ``capacity`` (``table3``),
``attention_strategy`` (``appendix_table1``), ``input_size`` (``appendix_table2``),
``complexity`` (``appendix_table3``). :meth:`ExperimentSpec.required_runs` lists the runs a
table needs, so the workflow trains exactly those and the tables fail clearly without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medvisionllama.errors import InputError
from medvisionllama.paper.outputs import PaperTable, table_of_kind
from medvisionllama.tasks import task_info
from medvisionllama.vocabulary import ATTENTIONS, DEFAULT_ATTENTION, RunKey, parse_size


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment of the config (see the module docstring for the YAML)."""

    name: str
    kind: str
    tasks: tuple[str, ...]
    models: tuple[str, ...]
    attention: tuple[str, ...] = (DEFAULT_ATTENTION,)
    sizes: tuple[str, ...] = ("64x64x40",)
    seeds: tuple[int, ...] = (0,)
    llm_for_paper: dict[str, str] = field(default_factory=dict)
    size_for_paper: dict[str, str] = field(default_factory=dict)
    #: the layers the LLM models were swept over, as written (empty: no sweep); ``models`` is expanded
    llm_layers: tuple[int, ...] = ()
    #: ``split.folds``: K folds per run (None: the single train/val/test split)
    folds: int | None = None
    #: LLM model name -> (decoder layer index, number of layers), for the models of a layer sweep
    #: or named with ``@<layer>`` (filled by ``experiments.experiment_specs``)
    model_layers: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"experiment {self.name!r}"
        table = table_of_kind(self.kind, where)
        for key in ("tasks", "models", "attention", "sizes", "seeds"):
            values = getattr(self, key)
            if not values:
                raise InputError(f"{where}: {key} is empty")
            if len(set(values)) != len(values):
                raise InputError(f"{where}: {key} has duplicates: {list(values)}")
        for attention in self.attention:
            if attention not in ATTENTIONS:
                raise InputError(f"{where}: unknown attention {attention!r}: expected one of {', '.join(ATTENTIONS)}")
        for size in self.sizes:
            parse_size(size)
        if len(set(self.llm_layers)) != len(self.llm_layers):
            raise InputError(f"{where}: llm_layers has duplicates: {list(self.llm_layers)}")
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2):
            raise InputError(f"{where}: folds must be an integer >= 2 or null, got {self.folds!r}")
        for key in self.llm_for_paper:
            if key not in self.models:
                raise InputError(f"{where}: llm_for_paper names {key!r}, which is not in models {list(self.models)}")
        table.validate(self)

    @property
    def table(self) -> PaperTable:
        """The paper table this experiment rebuilds."""
        return table_of_kind(self.kind)

    @property
    def paper_table(self) -> str:
        """The key of the published table, e.g. ``table2``."""
        return self.table.name

    @property
    def baseline(self) -> str:
        """The model the others are compared with: the first of ``models``."""
        return self.models[0]

    def paper_model(self, model: str) -> str:
        """The paper's model that ``model`` stands for (itself unless ``llm_for_paper`` maps it)."""
        return self.llm_for_paper.get(model, model)

    def paper_size(self, size: str) -> str:
        return self.size_for_paper.get(size, size)

    def required_runs(self) -> list[RunKey]:
        """The runs this experiment's table needs, in a stable order (see ``PaperTable.required_runs``)."""
        return self.table.required_runs(self)

    @classmethod
    def from_dict(cls, name: str, spec: dict[str, Any]) -> "ExperimentSpec":
        if not isinstance(spec, dict):
            raise InputError(f"experiment {name!r}: expected a mapping, got {type(spec).__name__}")
        known = {"kind", "tasks", "models", "attention", "sizes", "seeds", "llm_for_paper", "size_for_paper", "llm_layers"}
        unknown = set(spec) - known
        if unknown:
            raise InputError(f"experiment {name!r}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        for key in ("tasks", "models"):
            if key not in spec:
                raise InputError(f"experiment {name!r}: missing {key!r}")

        def seq(key: str, default: tuple) -> tuple:
            value = spec.get(key, default)
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)

        return cls(
            name=name,
            kind=str(spec.get("kind", name)),
            tasks=tuple(task_info(str(t)).name for t in seq("tasks", ())),
            models=tuple(str(m) for m in seq("models", ())),
            attention=tuple(str(a) for a in seq("attention", (DEFAULT_ATTENTION,))),
            sizes=tuple(str(s) for s in seq("sizes", ("64x64x40",))),
            seeds=tuple(int(s) for s in seq("seeds", (0,))),
            llm_for_paper={str(k): str(v) for k, v in (spec.get("llm_for_paper") or {}).items()},
            size_for_paper={str(k): str(v) for k, v in (spec.get("size_for_paper") or {}).items()},
            llm_layers=tuple(_layer(name, v) for v in seq("llm_layers", ())),
        )


def _layer(experiment: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"experiment {experiment!r}: llm_layers takes integers (negative: from the end), got {value!r}")
    return value


def parse_experiments(experiments: Any) -> list[ExperimentSpec]:
    """Specs from the config's ``experiments`` mapping (name -> spec), taken as written (no defaults
    from the rest of the config: :func:`medvisionllama.experiments.experiment_specs` fills those)."""
    if not isinstance(experiments, dict):
        raise InputError(f"experiments: expected a mapping name -> experiment, got {type(experiments).__name__}")
    return [ExperimentSpec.from_dict(str(name), spec) for name, spec in experiments.items()]
