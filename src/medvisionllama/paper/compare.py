"""Published vs reproduced: value tables, the paper's claims tested, and the provenance header.

* :func:`comparison_values`: every reproduced cell of an experiment's table beside the number the
  paper prints for the model it stands for (``llm_for_paper``), with the difference
  (reproduced - published).
* :func:`claims`: the paper's pairwise claims ("ViT + Llama beats ViT on Task01 Dice", "HA beats
  SA", "sequential beats parallel", ...; each table object lists its pairs) tested on the reproduced per-case scores with a paired
  test (:func:`medvisionllama.paper.summary.paired_test`). The direction claimed is the one the
  published numbers show (lower is better for HD95; equal published numbers claim no difference);
  where the paper prints no number for a pair, the paper's general claim (the first model or
  attention is better) is used, and ``claim_source`` says so. ``claim_holds``: ``yes`` (same
  direction, p < alpha), ``not significant`` (same direction, p >= alpha or no p), ``no``
  (opposite direction, or a difference where none is claimed), ``n/a`` (no pairs).
* :func:`provenance_header`: the lines every comparison starts with, saying how the
  configuration differs from the paper's, so a demo number is never read as a reproduction.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from medvisionllama.paper.published import (
    LOWER_IS_BETTER, METRIC_LABELS, PAPER_SETUP, TABLES, load_published, model_label,
)
from medvisionllama.paper.spec import ExperimentSpec
from medvisionllama.paper.summary import ExperimentScores, paired_scores, paired_test
from medvisionllama.vocabulary import parse_model_name

ALPHA = 0.05
def _reproduced(row: pd.Series, metric: str) -> tuple[float, float]:
    if metric == "params_m":
        return row["params_total"] / 1e6, math.nan
    if metric == "train_hours":
        return row["train_seconds"] / 3600.0, math.nan
    return row[f"{metric}_mean"], row[f"{metric}_std"]


def _published(pub: pd.DataFrame, metric: str, task: str, model: str, attention: str, size: str) -> tuple[float, float]:
    hit = pub[(pub["metric"] == metric) & (pub["model"] == model) & (pub["attention"] == attention)
              & pub["task"].isin([task, ""]) & pub["size"].isin([size, ""])]
    if hit.empty:
        return math.nan, math.nan
    return float(hit.iloc[0]["mean"]), float(hit.iloc[0]["std"])


def comparison_values(scored: ExperimentScores) -> pd.DataFrame:
    """Published and reproduced value of every cell of an experiment's table, and their difference
    (the cells: the table object's ``metrics`` for each run group)."""
    spec = scored.spec
    metrics = spec.table.metrics
    pub = load_published(spec.paper_table)
    rows = []
    for _, row in scored.summary.iterrows():
        paper_model, paper_size = spec.paper_model(row["model"]), spec.paper_size(row["size"])
        for metric in metrics:
            r_mean, r_std = _reproduced(row, metric)
            p_mean, p_std = _published(pub, metric, row["task"], paper_model, row["attention"], paper_size)
            rows.append({
                "experiment": spec.name, "table": TABLES[spec.paper_table], "task": row["task"],
                "model": row["model"], "paper_model": paper_model, "attention": row["attention"],
                "size": row["size"], "metric": metric, "published_mean": p_mean, "published_std": p_std,
                "reproduced_mean": r_mean, "reproduced_std": r_std,
                "difference": r_mean - p_mean, "n_cases": row["n_cases"], "n_seeds": row["n_seeds"],
            })
    return pd.DataFrame(rows)


def _label(spec: ExperimentSpec, sel: dict[str, str], show: set[str]) -> str:
    label = model_label(sel["model"])
    if spec.paper_model(sel["model"]) != sel["model"]:
        label += f" (for {model_label(spec.paper_model(sel['model']))})"
    if "attention" in show:
        label += f" [{sel['attention']}]"
    if "size" in show:
        label += f" [{sel['size']}]"
    return label


def claims(scored: ExperimentScores, alpha: float = ALPHA) -> pd.DataFrame:
    """The paper's pairwise claims for an experiment (its table's ``pairs``), tested on the
    reproduced per-case scores. The one place claims are decided: every table calls this."""
    spec, scores, summary = scored.spec, scored.scores, scored.summary
    pub = load_published(spec.paper_table)
    rows = []
    for a, b, metric in spec.table.pairs(spec):
        show = {k for k in ("attention", "size") if a[k] != b[k]}
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        pa = _published(pub, metric, a["task"], spec.paper_model(a["model"]), a["attention"], spec.paper_size(a["size"]))[0]
        pb = _published(pub, metric, b["task"], spec.paper_model(b["model"]), b["attention"], spec.paper_size(b["size"]))[0]
        if math.isnan(pa) or math.isnan(pb):
            expected, source = 1.0, "paper's general claim"
        else:
            expected, source = float(sign * (pa - pb) > 0) - float(sign * (pa - pb) < 0), "published values"
        x, y = paired_scores(scores, metric, a, b)
        p, test = paired_test(x, y)
        ra = summary[(summary[list(a)] == pd.Series(a)).all(axis=1)][f"{metric}_mean"]
        rb = summary[(summary[list(b)] == pd.Series(b)).all(axis=1)][f"{metric}_mean"]
        ra_v = float(ra.iloc[0]) if len(ra) else math.nan
        rb_v = float(rb.iloc[0]) if len(rb) else math.nan
        diff = ra_v - rb_v
        observed = float(sign * diff > 0) - float(sign * diff < 0) if not math.isnan(diff) else math.nan
        significant = (not math.isnan(p)) and p < alpha
        if len(x) == 0 or math.isnan(observed):
            holds = "n/a"
        elif expected == 0:
            holds = "no" if significant else "yes"
        elif observed == expected:
            holds = "yes" if significant else "not significant"
        else:
            holds = "no"
        word = {1.0: "better than", -1.0: "worse than", 0.0: "equal to"}[expected]
        la, lb = _label(spec, a, show), _label(spec, b, show)
        rows.append({
            "experiment": spec.name, "task": a["task"], "metric": metric, "a": la, "b": lb,
            "claim": f"{la} {word} {lb} in {METRIC_LABELS[metric]} on {a['task'].split('_')[0]}"
                     + (f" at {a['size']}" if spec.table.claim_at_size else ""),
            "claim_source": source, "published_a": pa, "published_b": pb,
            "reproduced_a": ra_v, "reproduced_b": rb_v, "reproduced_diff": diff,
            "n_pairs": len(x), "test": test, "p_value": p, "claim_holds": holds,
        })
    return pd.DataFrame(rows)


def configuration_differences(spec: ExperimentSpec, provenance: dict[str, Any] | None = None) -> list[str]:
    """How the configuration behind ``spec`` differs from the paper's, one phrase per difference."""
    prov = dict(provenance or {})
    diffs: list[str] = []
    source = prov.get("data_source")
    if source is None:
        diffs.append("data source not stated: not verified as the MSD data the paper uses")
    elif str(source).lower() != PAPER_SETUP["data_source"]:
        diffs.append(f"{source} data (paper: the MSD images)")
    for key, unit in (("epochs", "epochs"), ("batch_size", "batch size"), ("learning_rate", "learning rate")):
        value = prov.get(key)
        if value is not None and value != PAPER_SETUP[key]:
            diffs.append(f"{unit} {value} (paper: {PAPER_SETUP[key]})")
    for model in spec.models:
        paper = spec.paper_model(model)
        if paper != model:
            diffs.append(f"{model_label(model).removeprefix('ViT + ')} block ({model}) stands in for "
                         f"{model_label(paper).removeprefix('ViT + ')} ({paper})")
        elif parse_model_name(model).control == "random":
            diffs.append(f"{model}: random weights, a control the paper does not have")
        elif parse_model_name(model).control == "shuffled":
            diffs.append(f"{model}: the pretrained weights permuted, a control the paper does not have")
    if spec.kind == "input_size":
        for size in spec.sizes:
            if spec.paper_size(size) != size:
                diffs.append(f"input size {size} stands in for the paper's {spec.paper_size(size)}")
    return diffs


def provenance_header(spec: ExperimentSpec, provenance: dict[str, Any] | None = None) -> list[str]:
    """Lines saying how the configuration behind ``spec`` differs from the paper's.

    ``provenance`` keys (all optional): ``data_source`` (``msd``, ``synthetic``, ...), ``epochs``,
    ``batch_size``, ``learning_rate``, ``notes`` (list of free lines). LLM stand-ins and input
    sizes are read from ``spec``.
    """
    prov = dict(provenance or {})
    diffs = configuration_differences(spec, prov)
    sizes = ", ".join(spec.sizes)
    lines = [f"{TABLES[spec.paper_table]} ({spec.kind}), experiment '{spec.name}'."]
    if diffs:
        lines.append("NOT the paper's configuration: " + "; ".join(diffs) + ". "
                     "Published numbers are shown for reference, not as the target of this run.")
    else:
        lines.append("Configuration as stated in the paper (MSD data, 100 epochs, batch 4, lr 1e-5).")
    lines.append(f"Input size {sizes} (the paper states sizes only in Appendix Table 2); "
                 f"seeds {', '.join(map(str, spec.seeds))}.")
    lines += [str(n) for n in prov.get("notes", []) or []]
    return lines
