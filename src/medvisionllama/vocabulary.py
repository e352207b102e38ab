"""The pipeline's vocabulary, defined once: run keys, model names, attention strategies, metric
names, the columns of the files runs write, and input sizes.

Every stage reads these words from here: Snakemake (at parse time, on a cluster's login node and
in every job), each ``mvl`` verb, and ``paper/``. So this module imports neither torch nor
transformers (nor pandas); the LLM names come from :mod:`medvisionllama.llm.registry`, which
builds its ``transformers`` configs only when asked.

Model names (``ModelConfig.model``, the ``{model}`` of a run path):

* ``vit``: the plain ViT, no bridge;
* ``mlp``: the ViT with a GELU + LayerNorm bridge instead of V_LLM;
* ``<llm>``: a registry name (``llama3.1-8b``): the pretrained frozen decoder layer;
* ``<llm>-random``: the same layer with Gaussian weights (needs no weights file);
* ``<llm>-shuffled``: the scale-matched control: the pretrained layer's tensors with their values
  permuted (keeps each tensor's value distribution, not its arrangement), so it needs the
  pretrained layer file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from medvisionllama.errors import InputError
from medvisionllama.llm.registry import LLM_REGISTRY

# ---------------------------------------------------------------------------------- attention
#: the encoder's attention strategies; the first is the paper's default
ATTENTIONS: tuple[str, ...] = ("hybrid-sequential", "hybrid-parallel", "hybrid-interleaved", "spatial")
DEFAULT_ATTENTION = ATTENTIONS[0]

# ------------------------------------------------------------------------------------ metrics
#: per-case metrics, in the column order of ``metrics.csv``
METRIC_NAMES: tuple[str, ...] = ("dice", "jaccard", "precision", "recall", "accuracy", "hd95")
#: the same metrics in the order of the paper's Table 2 rows (and the radar chart's axes)
PAPER_METRICS: tuple[str, ...] = ("dice", "accuracy", "precision", "recall", "jaccard", "hd95")

# ------------------------------------------------------------------------------------ columns
#: the columns naming a run, in run-path order
RUN_KEY_COLUMNS: tuple[str, ...] = ("task", "model", "attention", "size", "seed")
#: each metric's status column (``defined``, ``penalised``, ``empty`` or ``skipped``: see
#: ``evaluation/metrics.py``), in the order of :data:`METRIC_NAMES`
METRIC_STATUS_COLUMNS: tuple[str, ...] = tuple(f"{m}_status" for m in METRIC_NAMES)
#: ``metrics.csv`` of ``mvl evaluate``: one row per test case and class, the values then their statuses
METRICS_COLUMNS: tuple[str, ...] = (
    *RUN_KEY_COLUMNS, "case_id", "class_index", "class_name", *METRIC_NAMES, *METRIC_STATUS_COLUMNS,
)
#: ``class_name`` of the per-case summary rows of the long table (mean over foreground classes)
MEAN_CLASS = "mean"
#: ``history.csv`` of ``mvl train``: one row per epoch
HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "train_dice", "val_loss", "val_dice", "seconds")

# --------------------------------------------------------------------------------------- sizes
#: the input size that keeps each volume's native (canonical) grid
FULL_SIZE = "full"
#: the size grammar as a regular expression (Snakemake's wildcard constraint)
SIZE_PATTERN = r"[0-9]+x[0-9]+x[0-9]+|full"


def parse_size(size: str) -> tuple[int, int, int] | None:
    """``"64x64x40"`` -> ``(64, 64, 40)``; ``"full"`` -> ``None`` (keep the native grid)."""
    if size == FULL_SIZE:
        return None
    parts = str(size).lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise InputError(f"invalid input size {size!r}: expected XxYxZ with positive integers (e.g. 64x64x40) or 'full'")
    return dims  # type: ignore[return-value]


def size_name(dims: tuple[int, int, int] | None) -> str:
    """``(64, 64, 40)`` -> ``"64x64x40"``; ``None`` -> ``"full"``."""
    return FULL_SIZE if dims is None else "x".join(str(d) for d in dims)


# --------------------------------------------------------------------------------- model names
#: registry names of the LLMs whose decoder layer can serve as V_LLM
LLM_NAMES: tuple[str, ...] = tuple(LLM_REGISTRY)
#: models without an LLM block: the plain ViT and the GELU + LayerNorm ablation
NON_LLM_MODELS: tuple[str, ...] = ("vit", "mlp")
#: the controls of an LLM block, spelled as a name suffix ``<llm>-<control>``
CONTROLS: tuple[str, ...] = ("random", "shuffled")

ModelKind = Literal["vit", "mlp", "llm"]
Control = Literal["random", "shuffled"]


@dataclass(frozen=True)
class ModelName:
    """A parsed model name (see the module docstring for the grammar)."""

    name: str
    kind: ModelKind
    llm: str | None = None  #: the registry name of the LLM block (``kind == "llm"``)
    control: Control | None = None  #: None: the pretrained block

    @property
    def bridge(self) -> str:
        """``none`` (vit), ``mlp`` or ``llm``: the block between encoder and decoder."""
        return "none" if self.kind == "vit" else self.kind

    @property
    def pretrained(self) -> bool:
        """True for the pretrained block ``<llm>`` only."""
        return self.kind == "llm" and self.control is None

    @property
    def layer_llm(self) -> str | None:
        """The LLM whose extracted layer file this model needs: the pretrained block and the
        shuffled control (it permutes the pretrained tensors) need one; the others none."""
        return self.llm if self.kind == "llm" and self.control != "random" else None


def known_model_names() -> list[str]:
    """Every valid model name."""
    return list(NON_LLM_MODELS) + [f"{llm}{suffix}" for llm in LLM_REGISTRY for suffix in ("", *(f"-{c}" for c in CONTROLS))]


def split_control(name: str) -> tuple[str, str | None]:
    """``"smollm2-135m-shuffled"`` -> ``("smollm2-135m", "shuffled")``; a name without a control
    suffix -> ``(name, None)``. No validation (labels also show names outside the registry)."""
    for candidate in CONTROLS:
        if name.endswith(f"-{candidate}"):
            return name[: -len(candidate) - 1], candidate
    return name, None


def parse_model_name(name: str) -> ModelName:
    """Read a model name; an ``InputError`` naming the known models when it is none of them."""
    if not isinstance(name, str):
        raise InputError(f"model name must be a string, got {name!r}")
    if name in NON_LLM_MODELS:
        return ModelName(name, name)  # type: ignore[arg-type]
    base, control = split_control(name)
    if base not in LLM_REGISTRY:
        raise InputError(f"unknown model {name!r}; known: {', '.join(known_model_names())}")
    return ModelName(name, "llm", base, control)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ run keys
#: where a run's files live, relative to ``{results_dir}/runs`` (a Snakemake wildcard pattern)
RUN_PATH = "{task}/{model}/{attention}/{size}/seed{seed}"
_RUN_PATH_RE = re.compile(r"(?P<task>[^/]+)/(?P<model>[^/]+)/(?P<attention>[^/]+)/(?P<size>[^/]+)/seed(?P<seed>[0-9]+)")


class RunKey(NamedTuple):
    """One run: task x model x attention x input size x seed (a run's folder is :meth:`path`)."""

    task: str
    model: str
    attention: str
    size: str
    seed: int

    def path(self) -> str:
        """``Task01_BrainTumour/vit/hybrid-sequential/64x64x40/seed0``."""
        return RUN_PATH.format(**self._asdict())

    def group(self) -> str:
        """The run's path without the seed: the group a table cell averages over seeds."""
        return self.path().rsplit("/", 1)[0]

    @classmethod
    def from_path(cls, path: str | Path) -> "RunKey":
        """The run of a run folder, or of a file directly inside one (``.../seed0/samples.npz``)."""
        parts = Path(path).parts
        if parts and not parts[-1].startswith("seed"):
            parts = parts[:-1]
        match = _RUN_PATH_RE.fullmatch("/".join(parts[-5:]))
        if match is None:
            raise InputError(f"{path}: expected .../{RUN_PATH}[/file]")
        values = match.groupdict()
        return cls(values["task"], values["model"], values["attention"], values["size"], int(values["seed"]))
