"""The paper's outputs, one object per table and figure (see :mod:`.base`).

Each table is one module here (``table2``, ``table3``, ``table4``, ``appendix_table1`` ...)
defining ``TABLE``; adding a table is adding a module and listing it in :data:`TABLES`.
``custom`` is not the paper's: any models and tasks, claims without published numbers. The
figures are :mod:`.figures`. Nothing here imports torch or matplotlib: Snakemake reads the file
names at parse time (on the login node and in every cluster job).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvisionllama.errors import InputError
from medvisionllama.paper.outputs import (
    appendix_table1, appendix_table2, appendix_table3, custom, layer_sweep, table2, table3, table4,
)
from medvisionllama.paper.outputs.base import PaperFigure, PaperTable
from medvisionllama.paper.outputs.figures import FIGURES, figure_files

if TYPE_CHECKING:
    from medvisionllama.paper.spec import ExperimentSpec

#: experiment kind (the config's ``kind:``) -> the table it rebuilds
TABLES: dict[str, PaperTable] = {
    module.TABLE.kind: module.TABLE
    for module in (table2, table4, table3, appendix_table1, appendix_table2, appendix_table3, custom)
}

__all__ = ["FIGURES", "TABLES", "PaperFigure", "PaperTable", "figure_outputs", "table_of_kind"]


def table_of_kind(kind: str, where: str = "experiment") -> PaperTable:
    """The table an experiment of ``kind`` rebuilds; an ``InputError`` naming the kinds otherwise."""
    if kind not in TABLES:
        raise InputError(f"{where}: unknown kind {kind!r}: expected one of {', '.join(TABLES)}")
    return TABLES[kind]


def figure_outputs(specs: list["ExperimentSpec"]) -> list[str]:
    """File names ``mvl figures`` writes for these experiments (for Snakemake ``output:``)."""
    return [f.name for f in figure_files(specs)]
