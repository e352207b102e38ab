"""What every paper output object is: :class:`PaperTable` (one per table of the paper) and
:class:`PaperFigure` (one per figure), and the cell formatting the table layouts share.

A table object holds everything about one table of the paper: the experiment ``kind`` that
selects it in the config, the key of its published numbers (``table2``), its caption, the
settings an experiment of it must fix, the runs it needs, its layout, the metrics its
published-vs-reproduced comparison shows, the claims it tests (pairs of run groups) and the
names of the files ``mvl tables`` writes for it. The claims themselves are computed in one
place (:func:`medvisionllama.paper.compare.claims`) from the pairs a table lists.

This module and the table modules import pandas but neither torch nor matplotlib: Snakemake
reads the output file names at parse time.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import pandas as pd

from medvisionllama.errors import InputError
from medvisionllama.paper.published import TABLES, model_label
from medvisionllama.paper.render import fmt
from medvisionllama.tasks import task_info
from medvisionllama.vocabulary import RunKey, parse_model_name

if TYPE_CHECKING:  # spec.py imports this module (an experiment's kind is a table object)
    from medvisionllama.paper.spec import ExperimentSpec

#: ``cell(task, model, attention, size)``: one summary row (see ``paper.summary.summarize``)
Cell = Callable[[str, str, str, str], pd.Series]
#: ``sel(model, attention=default, size=default)``: a run group of one task, for a claim pair
Select = Callable[..., dict[str, str]]
#: ``(a, b, metric)``: the paper claims run group ``a`` is better than ``b`` on ``metric``
Pair = tuple[dict[str, str], dict[str, str], str]


def short_task(task: str) -> str:
    """``Task01_BrainTumour`` -> ``Task01``."""
    return task.split("_", 1)[0]


def decimals(metric: str) -> int:
    return 1 if metric == "hd95" else 2


#: the markers a score cell carries: ``†k`` k cases penalised, ``‡k`` k cases undefined
PENALISED_MARK, UNDEFINED_MARK = "†", "‡"
PENALISED_NOTE = (f"{PENALISED_MARK}k: k of the cell's n test cases penalised (a miss or a false alarm scored with "
                  "the worst value: Dice 0, HD95 = image diagonal)")
UNDEFINED_NOTE = (f"{UNDEFINED_MARK}k: k of the cell's n test cases undefined (every class absent in both masks: "
                  "scored with the best value, Dice 1, HD95 0; or not computed)")


def score(row: pd.Series, metric: str) -> str:
    """``mean ± std`` of ``metric`` in a summary row, followed by ``†k`` when k of its cases were
    penalised and ``‡k`` when k were undefined (e.g. ``0.45 ± 0.10 †2``)."""
    text = fmt(row[f"{metric}_mean"], row[f"{metric}_std"], decimals(metric))
    for what, mark in (("n_penalised", PENALISED_MARK), ("n_undefined", UNDEFINED_MARK)):
        k = row.get(f"{metric}_{what}", 0)
        if pd.notna(k) and int(k) > 0:
            text += f" {mark}{int(k)}"
    return text


def marker_notes(table: pd.DataFrame, cases: list[int] | None = None) -> list[str]:
    """The footnote lines for the markers ``table``'s cells carry (none when no cell has one);
    ``cases``: the n of the cells (named in the note when they all agree)."""
    cells = " ".join(table.astype(str).to_numpy().ravel())
    n = f" (n = {cases[0]})" if cases and len(set(cases)) == 1 else ""
    notes = [note for mark, note in ((PENALISED_MARK, PENALISED_NOTE), (UNDEFINED_MARK, UNDEFINED_NOTE))
             if mark in cells]
    return [note.replace("the cell's n test cases", f"the cell's n test cases{n}") for note in notes]


def params_m(row: pd.Series) -> str:
    return fmt(row["params_total"] / 1e6)


def hours(seconds: float) -> str:
    """Training time in hours, as the paper gives it (two decimals); below 0.1 h (demo runs) in
    seconds or minutes with the unit, since 0.00 h would hide the comparison."""
    value = seconds / 3600.0
    if pd.isna(value) or value >= 0.1:
        return fmt(value)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def claimed_models(spec: "ExperimentSpec") -> list[str]:
    """The models after the baseline that the paper makes claims about: the pretrained LLM blocks.
    Not the controls (``<llm>-random``, ``<llm>-shuffled``) nor the MLP ablation: the paper never
    claims they beat the ViT (the MLP is weighed against the LLM block in Table 3)."""
    return [m for m in spec.models[1:] if parse_model_name(m).pretrained]


def control_pairs(spec: "ExperimentSpec", sel: Select, metric: str = "dice", **where: str) -> list[Pair]:
    """Each pretrained LLM block against its own controls in the experiment (family ``control``:
    does the pretrained arrangement of the weights help, beyond the block's capacity and scale?)."""
    out: list[Pair] = []
    for model in spec.models:
        parsed = parse_model_name(model)
        if not parsed.pretrained:
            continue
        for other in spec.models:
            control = parse_model_name(other)
            if control.control is not None and control.llm == parsed.llm:
                out.append((sel(model, **where), sel(other, **where), metric))
    return out


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper (see the module docstring)."""

    name: str  #: the published numbers' key, e.g. ``table2`` (``published.TABLES``)
    kind: str  #: the experiment kind that selects this table in the config, e.g. ``main``
    caption: str
    metrics: tuple[str, ...]  #: cells of the published-vs-reproduced comparison
    layout: Callable[["ExperimentSpec", Cell], pd.DataFrame]  #: the reproduced table, strings
    task_pairs: Callable[["ExperimentSpec", Select], list[Pair]]  #: the claims on one task
    single: tuple[str, ...] = ()  #: spec keys that take exactly one value
    min_models: int = 1  #: compares a baseline with at least one more model when 2
    check: Callable[["ExperimentSpec"], None] | None = None  #: further checks of a spec
    keep_run: Callable[[RunKey], bool] | None = None  #: runs of the full grid this table needs
    claim_at_size: bool = False  #: claims name the input size
    published: bool = True  #: the paper prints this table (False: ``custom``, no comparison files)

    @property
    def title(self) -> str:
        """The paper's name of the table, e.g. ``Table 2``."""
        return TABLES[self.name]

    def validate(self, spec: "ExperimentSpec") -> None:
        where = f"experiment {spec.name!r}"
        for key in self.single:
            if len(getattr(spec, key)) != 1:
                raise InputError(f"{where}: kind {spec.kind} takes exactly one value in {key}, got {list(getattr(spec, key))}")
        if len(spec.models) < self.min_models:
            raise InputError(f"{where}: kind {spec.kind} compares models: give the baseline first and at least one more")
        if self.check is not None:
            self.check(spec)

    def required_runs(self, spec: "ExperimentSpec") -> list[RunKey]:
        """The runs of ``spec`` this table needs, in a stable order (the grid tasks x models x
        attention x sizes x seeds [x folds], less those ``keep_run`` leaves out)."""
        folds = range(spec.folds) if spec.folds else [None]
        grid = itertools.product(spec.tasks, spec.models, spec.attention, spec.sizes, spec.seeds, folds)
        runs = [RunKey(*k) for k in grid]
        return [r for r in runs if self.keep_run(r)] if self.keep_run else runs

    def pairs(self, spec: "ExperimentSpec") -> list[Pair]:
        """Every claim pair of ``spec``, task by task."""
        out: list[Pair] = []
        att, size = spec.attention[0], spec.sizes[0]
        for task in spec.tasks:
            def sel(model: str, attention: str = att, size_: str = size, task: str = task) -> dict[str, str]:
                return {"task": task, "model": model, "attention": attention, "size": size_}

            out += self.task_pairs(spec, sel)
        return out

    def files(self, experiment: str) -> dict[str, list[str]]:
        """The file names ``mvl tables`` writes for an experiment of this table, by content."""
        files = {
            "table": [f"{experiment}.{e}" for e in ("csv", "md", "tex", "html")],
            "comparison": [f"{experiment}_comparison.{e}" for e in ("csv", "md", "tex", "html")],
            "claims": [f"{experiment}_claims.{e}" for e in ("csv", "md", "html")],
        }
        if not self.published:  # nothing to compare with
            del files["comparison"]
        return files


@dataclass(frozen=True)
class PaperFigure:
    """One figure of the paper: its file stem and the experiment kinds it can be drawn from (the
    first kind the config has wins; none: drawn from every experiment)."""

    stem: str
    title: str
    sources: tuple[str, ...] = field(default_factory=tuple)

    def source(self, specs: list["ExperimentSpec"]) -> "ExperimentSpec | None":
        """The experiment this figure is drawn from, or None when the config has none of its kinds."""
        for kind in self.sources:
            for spec in specs:
                if spec.kind == kind:
                    return spec
        return None

    def wanted(self, specs: list["ExperimentSpec"]) -> bool:
        if not self.sources:  # drawn from every experiment: only those with published numbers count
            return any(spec.table.published and any(task_info(t).msd for t in spec.tasks) for spec in specs)
        return self.source(specs) is not None

    def files(self) -> list[str]:
        return [f"{self.stem}.{e}" for e in ("png", "pdf")]

