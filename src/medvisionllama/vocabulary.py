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
  pretrained layer file;
* any LLM name above followed by ``@<layer>`` (``smollm2-135m@0``, ``smollm2-135m-shuffled@15``):
  the same block taken from decoder layer ``<layer>`` (absolute, non-negative). Without ``@`` the
  LLM's default layer is meant; the experiments write a name without ``@`` when the layer is that
  default (:func:`medvisionllama.experiments.experiment_specs`), so a default run keeps its path.

Run keys (:class:`RunKey`): ``{task}/{model}/{attention}/{size}/{replicate}`` where the replicate is
``seed{seed}`` (the single split) or ``seed{seed}-fold{fold}`` (k-fold cross-validation).
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
#: separates an LLM model name from its decoder-layer index (``smollm2-135m@0``)
LAYER_MARK = "@"

ModelKind = Literal["vit", "mlp", "llm"]
Control = Literal["random", "shuffled"]


@dataclass(frozen=True)
class ModelName:
    """A parsed model name (see the module docstring for the grammar)."""

    name: str
    kind: ModelKind
    llm: str | None = None  #: the registry name of the LLM block (``kind == "llm"``)
    control: Control | None = None  #: None: the pretrained block
    layer: int | None = None  #: the decoder layer after ``@``; None: the LLM's default layer

    @property
    def base(self) -> str:
        """The name without its ``@<layer>`` (``smollm2-135m-shuffled@3`` -> ``smollm2-135m-shuffled``)."""
        return self.name.split(LAYER_MARK, 1)[0]

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
        """The key of the extracted layer file this model needs (``results/llm/{key}.safetensors``):
        ``<llm>`` for the default layer, ``<llm>@<layer>`` otherwise. The pretrained block and the
        shuffled control (it permutes the pretrained tensors) need one; the others none."""
        if self.kind != "llm" or self.control == "random":
            return None
        return self.llm if self.layer is None else f"{self.llm}{LAYER_MARK}{self.layer}"


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


def split_layer(name: str) -> tuple[str, int | None]:
    """``"smollm2-135m@3"`` -> ``("smollm2-135m", 3)``; no ``@`` -> ``(name, None)``. An
    ``InputError`` when what follows ``@`` is not a non-negative integer written plainly."""
    if LAYER_MARK not in name:
        return name, None
    base, _, layer = name.partition(LAYER_MARK)
    if not re.fullmatch(r"0|[1-9][0-9]*", layer):
        raise InputError(f"model {name!r}: the layer after {LAYER_MARK!r} must be a non-negative integer "
                         f"without sign or leading zeros (e.g. {base}{LAYER_MARK}0)")
    return base, int(layer)


def with_layer(name: str, layer: int | None) -> str:
    """``name`` (without ``@``) with ``@<layer>`` appended, or ``name`` when ``layer`` is None."""
    return name if layer is None else f"{name}{LAYER_MARK}{int(layer)}"


def parse_model_name(name: str) -> ModelName:
    """Read a model name; an ``InputError`` naming the known models when it is none of them."""
    if not isinstance(name, str):
        raise InputError(f"model name must be a string, got {name!r}")
    if name in NON_LLM_MODELS:
        return ModelName(name, name)  # type: ignore[arg-type]
    without_layer, layer = split_layer(name)
    base, control = split_control(without_layer)
    if base not in LLM_REGISTRY:
        raise InputError(f"unknown model {name!r}; known: {', '.join(known_model_names())}"
                         f" (an LLM name may end in {LAYER_MARK}<layer>)")
    return ModelName(name, "llm", base, control, layer)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ run keys
#: where a run's files live, relative to ``{results_dir}/runs`` (a Snakemake wildcard pattern)
RUN_PATH = "{task}/{model}/{attention}/{size}/{replicate}"
#: the last segment of a run path: ``seed{seed}`` or ``seed{seed}-fold{fold}`` (Snakemake's constraint)
REPLICATE_PATTERN = r"seed[0-9]+(-fold[0-9]+)?"
_REPLICATE_RE = re.compile(r"seed(?P<seed>0|[1-9][0-9]*)(?:-fold(?P<fold>0|[1-9][0-9]*))?")
_RUN_PATH_RE = re.compile(r"(?P<task>[^/]+)/(?P<model>[^/]+)/(?P<attention>[^/]+)/(?P<size>[^/]+)/(?P<replicate>seed[^/]+)")


def replicate_name(seed: int, fold: int | None = None) -> str:
    """``seed0`` (the single split) or ``seed0-fold2`` (fold 2 of a cross-validation)."""
    return f"seed{int(seed)}" if fold is None else f"seed{int(seed)}-fold{int(fold)}"


def parse_replicate(replicate: str) -> tuple[int, int | None]:
    """``"seed0-fold2"`` -> ``(0, 2)``; ``"seed3"`` -> ``(3, None)``; an ``InputError`` otherwise."""
    match = _REPLICATE_RE.fullmatch(str(replicate))
    if match is None:
        raise InputError(f"replicate {replicate!r}: expected seed<N> or seed<N>-fold<K>")
    fold = match.group("fold")
    return int(match.group("seed")), None if fold is None else int(fold)


class RunKey(NamedTuple):
    """One run: task x model x attention x input size x seed [x fold] (its folder is :meth:`path`).

    ``fold`` is None for the single train/val/test split, else the cross-validation fold whose
    ``test`` cases the run is evaluated on."""

    task: str
    model: str
    attention: str
    size: str
    seed: int
    fold: int | None = None

    @property
    def replicate(self) -> str:
        """The last path segment: ``seed0`` or ``seed0-fold2`` (:func:`replicate_name`)."""
        return replicate_name(self.seed, self.fold)

    def path(self) -> str:
        """``Task01_BrainTumour/vit/hybrid-sequential/64x64x40/seed0`` (``.../seed0-fold2`` with folds)."""
        return f"{self.group()}/{self.replicate}"

    def group(self) -> str:
        """The run's path without the replicate: what a table cell pools over (seeds, and the folds
        whose out-of-fold test cases together test every case once)."""
        return f"{self.task}/{self.model}/{self.attention}/{self.size}"

    @classmethod
    def from_path(cls, path: str | Path) -> "RunKey":
        """The run of a run folder, or of a file directly inside one (``.../seed0/samples.npz``)."""
        parts = Path(path).parts
        if parts and not parts[-1].startswith("seed"):
            parts = parts[:-1]
        match = _RUN_PATH_RE.fullmatch("/".join(parts[-5:]))
        replicate = _REPLICATE_RE.fullmatch(match.group("replicate")) if match else None
        if match is None or replicate is None:
            raise InputError(f"{path}: expected .../{RUN_PATH}[/file] with replicate seed<N>[-fold<K>]")
        values = match.groupdict()
        seed, fold = parse_replicate(values["replicate"])
        return cls(values["task"], values["model"], values["attention"], values["size"], seed, fold)
