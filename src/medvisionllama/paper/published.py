"""The numbers MedVisionLlama (arXiv 2410.02458) prints, as data.

``published.csv`` beside this module holds every number of Tables 2, 3, 4 and Appendix Tables
1-3, one row per number, entered exactly as printed (long format: ``table, task, model,
attention, size, metric, mean, std, note``). Nothing is corrected: where the paper contradicts
itself (Table 3's ViT Task01 std 0.08 vs Table 2's 0.14, Appendix Table 3's ViT HD95 12.5 vs
Table 2's 14.7, the Task02 Qwen typo "± 0.76 ± 0.13", ...) the row's ``note`` says so.

Conventions: ``task`` is empty for parameter counts (not task-specific) and for Appendix Table 2
(the paper does not say which task); ``size`` is empty where the paper does not state the input
size; ``attention`` is ``hybrid-sequential`` wherever the paper uses its default hybrid
attention. Metrics: ``dice, accuracy, precision, recall, jaccard, hd95`` (as in ``metrics.csv``),
``params_m`` (millions of parameters) and ``train_hours``.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import zlib

import pandas as pd

from medvisionllama.errors import InputError
from medvisionllama.vocabulary import ATTENTIONS, DEFAULT_ATTENTION, split_control

#: table key -> the paper's caption name
TABLES: dict[str, str] = {
    "table2": "Table 2",
    "table3": "Table 3",
    "table4": "Table 4",
    "appendix_table1": "Appendix Table 1",
    "appendix_table2": "Appendix Table 2",
    "appendix_table3": "Appendix Table 3",
    "custom": "Custom experiment",  # not the paper's: no published numbers (kind ``custom``)
}

#: the models the paper trains (model keys of run paths) -> the paper's column label
PAPER_MODELS: dict[str, str] = {
    "vit": "ViT",
    "mlp": "ViT + MLP",
    "gemma2-9b": "ViT + Gemma",
    "llama3.1-8b": "ViT + Llama",
    "mistral-7b": "ViT + Mistral",
    "qwen2-7b": "ViT + Qwen",
    "yi1.5-9b": "ViT + Yi",
}

#: display names of LLM blocks the paper does not use (stand-ins of the embedded default)
OTHER_LLMS: dict[str, str] = {"smollm2-135m": "SmolLM2-135M"}

#: attention strategy -> the paper's label (``hybrid-sequential`` -> ``Sequential``)
ATTENTION_LABELS: dict[str, str] = {a: a.removeprefix("hybrid-").capitalize() for a in ATTENTIONS}

#: metric key -> label in the paper's tables
METRIC_LABELS: dict[str, str] = {
    "dice": "Dice",
    "accuracy": "Accuracy",
    "precision": "Precision",
    "recall": "Recall",
    "jaccard": "Jaccard",
    "hd95": "HD95",
    "params_m": "Params (M)",
    "train_hours": "TT (h)",
}

#: metrics where lower is better
LOWER_IS_BETTER = frozenset({"hd95"})

#: the paper's training setup (Section 4.2), against which a configuration's differences are stated
PAPER_SETUP: dict[str, object] = {
    "data_source": "msd",
    "epochs": 100,
    "batch_size": 4,
    "learning_rate": 1e-5,
}

COLUMNS = ["table", "task", "model", "attention", "size", "metric", "mean", "std", "note"]


#: how each control is named wherever a model is labelled (tables and figures)
CONTROL_LABELS: dict[str, str] = {"random": "Gaussian control", "shuffled": "shuffled control"}


def model_label(model: str) -> str:
    """``vit`` -> ``ViT``; ``llama3.1-8b`` -> ``ViT + Llama``; ``smollm2-135m-random`` ->
    ``ViT + SmolLM2-135M (Gaussian control)``, ``smollm2-135m-shuffled`` -> ``ViT + SmolLM2-135M
    (shuffled control)`` (:data:`CONTROL_LABELS`); an unknown key is shown as ``ViT + <key>``. A
    layer suffix is spelled out: ``smollm2-135m@3`` -> ``ViT + SmolLM2-135M, layer 3``."""
    if model in PAPER_MODELS:
        return PAPER_MODELS[model]
    model, _, layer = model.partition("@")
    base, control = split_control(model)
    name = PAPER_MODELS.get(base, "").removeprefix("ViT + ") or OTHER_LLMS.get(base, base)
    return (f"ViT + {name}" + (f" ({CONTROL_LABELS[control]})" if control else "")
            + (f", layer {layer}" if layer else ""))


# One colour and marker per model, the same in every figure, keyed by the model's name (never by
# its position in a config's list). Colours: the Okabe-Ito colour-blind-safe set; a control has the
# hue of its pretrained block, lighter (Gaussian) or darker (shuffled), and its own marker.
_KIND_STYLES: dict[str, tuple[str, str]] = {"vit": ("#000000", "o"), "mlp": ("#a6761d", "s")}
_LLM_COLORS: dict[str, str] = {
    "smollm2-135m": "#0072b2", "llama3.1-8b": "#d55e00", "gemma2-9b": "#009e73", "mistral-7b": "#cc79a7",
    "qwen2-7b": "#e69f00", "yi1.5-9b": "#56b4e9",
}
_SPARE_COLORS = ("#882255", "#117733", "#44aa99", "#999933", "#aa4499", "#332288")  # other LLMs, by name hash
_CONTROL_STYLES: dict[str | None, tuple[float, str]] = {None: (0.0, "^"), "random": (0.4, "v"),
                                                        "shuffled": (-0.45, "D")}


def _shade(color: str, amount: float) -> str:
    """``color`` (``#rrggbb``) mixed with white (``amount`` > 0) or black (< 0) by ``|amount|``."""
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    target = 255 if amount > 0 else 0
    return "#" + "".join(f"{round(c + (target - c) * abs(amount)):02x}" for c in rgb)


def model_style(model: str) -> tuple[str, str]:
    """``(colour, marker)`` of ``model`` in every figure: ``vit`` black circles, ``mlp`` brown
    squares, each LLM its own colour with triangles, its ``-random`` control lighter with
    down-triangles, its ``-shuffled`` control darker with diamonds. Depends on the name only."""
    if model in _KIND_STYLES:
        return _KIND_STYLES[model]
    base, control = split_control(model.partition("@")[0])  # every layer of an LLM in its colour
    color = _LLM_COLORS.get(base) or _SPARE_COLORS[zlib.crc32(base.encode()) % len(_SPARE_COLORS)]
    amount, marker = _CONTROL_STYLES[control]
    return (_shade(color, amount) if amount else color), marker


@functools.lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    text = importlib.resources.files("medvisionllama.paper").joinpath("published.csv").read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))  # header comments
    df = pd.read_csv(io.StringIO(body), dtype=str, keep_default_na=False)
    if list(df.columns) != COLUMNS:
        raise InputError(f"published.csv: columns {list(df.columns)}, expected {COLUMNS}")
    df["mean"] = df["mean"].astype(float)
    df["std"] = [float(v) if v else float("nan") for v in df["std"]]
    return df


def load_published(table: str | None = None) -> pd.DataFrame:
    """All published numbers (a fresh copy), or those of one ``table`` key of :data:`TABLES`.

    Columns: ``table, task, model, attention, size, metric`` (strings, ``""`` where not stated),
    ``mean, std`` (floats, ``std`` NaN where none is printed), ``note``.
    """
    df = _load()
    if table is not None:
        if table not in TABLES:
            raise InputError(f"unknown published table {table!r}: expected one of {', '.join(TABLES)}")
        df = df[df["table"] == table]
    return df.reset_index(drop=True).copy()


def published_params(table: str | None = None) -> pd.DataFrame:
    """The parameter counts (millions) the paper prints: ``table, model, attention, size, params_m, note``."""
    df = load_published(table)
    df = df[df["metric"] == "params_m"]
    return df.rename(columns={"mean": "params_m"})[["table", "model", "attention", "size", "params_m", "note"]]


def published_value(table: str, metric: str, model: str, task: str = "", attention: str = DEFAULT_ATTENTION,
                    size: str = "") -> tuple[float, float] | None:
    """``(mean, std)`` the paper prints for one cell, or ``None`` where it prints none."""
    df = load_published(table)
    hit = df[(df["metric"] == metric) & (df["model"] == model) & (df["task"] == task)
             & (df["attention"] == attention) & (df["size"] == size)]
    if hit.empty:
        return None
    row = hit.iloc[0]
    return float(row["mean"]), float(row["std"])
