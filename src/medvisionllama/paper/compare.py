"""Published vs reproduced: value tables, the paper's claims tested, and the provenance header.

* :func:`comparison_values`: every reproduced cell of an experiment's table beside the number the
  paper prints for the model it stands for (``llm_for_paper``), with the difference
  (reproduced - published).
* :func:`claims`: the paper's pairwise claims ("ViT + Llama beats ViT on Task01 Dice", "HA beats
  SA", "sequential beats parallel", ...; each table object lists its pairs) weighed on the
  reproduced scores with :mod:`medvisionllama.paper.verdicts`: per claim the effect (mean paired
  difference a - b) with a 95 % bootstrap CI, n and its unit, a Wilcoxon test only where it can
  decide (else the reason), the raw and the Holm-adjusted p (Holm over the whole claims table)
  and a verdict: ``supported``, ``contradicted`` or ``inconclusive``. Units: the test cases of
  one run when the experiment has one seed, per-seed means paired by seed when it has several.
  An experiment with two or more tasks also gets one **headline** row per claim family (the
  same pair of models and metric on every task): the Wilcoxon signed-rank test over the
  per-task means (Demšar 2006, JMLR 7:1-30), n = tasks; headline rows come first. The direction
  claimed is the one the published numbers show (lower is better for HD95; equal published
  numbers claim no difference, which can only be contradicted or stay inconclusive); where the
  paper prints no number for a pair, the paper's general claim (the first model or attention is
  better) is used, and ``claim_source`` says so.
* :func:`provenance_header`: the lines every comparison starts with, saying how the
  configuration differs from the paper's, so a demo number is never read as a reproduction.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pandas as pd

from medvisionllama.paper.published import (
    LOWER_IS_BETTER, METRIC_LABELS, PAPER_SETUP, TABLES, load_published, model_label,
)
from medvisionllama.paper.spec import ExperimentSpec
from medvisionllama.tasks import task_info
from medvisionllama.paper.summary import ExperimentScores, paired_units
from medvisionllama.paper.verdicts import ALPHA, holm, paired_evidence, verdict
from medvisionllama.vocabulary import parse_model_name

#: what each claims table says about its units, beside ``verdicts.METHOD_NOTE``
UNITS_NOTE = ("Units: the test cases of one run (one seed), or per-seed means paired by seed (several seeds: "
              "seeds are the replicates); headline rows: per-task means, n = tasks (Demšar 2006, JMLR 7:1-30). "
              "Effect = mean of a - b; for HD95 lower is better.")


def _reproduced(row: pd.Series, metric: str) -> tuple[float, float]:
    if metric == "params_m":
        return row["params_total"] / 1e6, math.nan
    if metric == "train_hours":
        return row["train_seconds"] / 3600.0, math.nan
    return row[f"{metric}_mean"], row[f"{metric}_std"]


def _published(pub: pd.DataFrame, metric: str, task: str, model: str, attention: str, size: str) -> tuple[float, float]:
    if metric != "params_m" and not task_info(task).msd:  # a user's task: the paper has no number for it
        return math.nan, math.nan
    hit = pub[(pub["metric"] == metric) & (pub["model"] == model) & (pub["attention"] == attention)
              & pub["task"].isin([task, ""]) & pub["size"].isin([size, ""])]
    if hit.empty:
        return math.nan, math.nan
    return float(hit.iloc[0]["mean"]), float(hit.iloc[0]["std"])


def _count(row: pd.Series, metric: str, what: str) -> float:
    """A cell's count of penalised or undefined cases (NaN for a cell that aggregates no cases)."""
    key = f"{metric}_{what}"
    return float(row[key]) if key in row.index else math.nan


def comparison_values(scored: ExperimentScores) -> pd.DataFrame:
    """Published and reproduced value of every cell of an experiment's table, and their difference
    (the cells: the table object's ``metrics`` for each run group), with how many of a cell's
    (seed, case) scores were penalised or undefined (``n_penalised``, ``n_undefined``; NaN for
    parameters and training time)."""
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
                "n_penalised": _count(row, metric, "n_penalised"), "n_undefined": _count(row, metric, "n_undefined"),
                "device": row["device"],
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


def _direction(pa: float, pb: float, metric: str) -> tuple[int, str]:
    """The direction a claim takes: that of the published numbers (+1: a better, -1: b better, 0:
    equal), or the paper's general claim (+1) when either is missing."""
    if math.isnan(pa) or math.isnan(pb):
        return 1, "paper's general claim"
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    return int(np.sign(sign * (pa - pb))), "published values"


def _mean_of(summary: pd.DataFrame, sel: dict[str, str], metric: str) -> float:
    hit = summary[(summary[list(sel)] == pd.Series(sel)).all(axis=1)][f"{metric}_mean"]
    return float(hit.iloc[0]) if len(hit) else math.nan


def _bootstrap_seed(text: str) -> int:
    """A seed fixed by the claim's text (CRC-32), so each row's interval is the same on every run."""
    return zlib.crc32(text.encode("utf-8"))


_WORDS = {1: "better than", -1: "worse than", 0: "equal to"}
#: the columns of :func:`claims`, in order
CLAIM_COLUMNS = [
    "experiment", "headline", "task", "metric", "a", "b", "claim", "claim_source", "expected", "better",
    "published_a", "published_b", "reproduced_a", "reproduced_b", "effect", "ci_low", "ci_high", "n", "unit",
    "n_missing", "test", "p_value", "p_holm", "verdict",
]


def _row(spec: ExperimentSpec, claim: str, task: str, metric: str, la: str, lb: str, source: str, expected: int,
         published: tuple[float, float], reproduced: tuple[float, float], a_scores: np.ndarray,
         b_scores: np.ndarray, unit: str, headline: bool) -> dict[str, Any]:
    evidence = paired_evidence(a_scores, b_scores, unit=unit, seed=_bootstrap_seed(claim))
    return {
        "experiment": spec.name, "headline": headline, "task": task, "metric": metric, "a": la, "b": lb,
        "claim": claim, "claim_source": source, "expected": expected,
        "better": "lower is better" if metric in LOWER_IS_BETTER else "higher is better",
        "published_a": published[0], "published_b": published[1],
        "reproduced_a": reproduced[0], "reproduced_b": reproduced[1],
        "effect": evidence.effect, "ci_low": evidence.ci_low, "ci_high": evidence.ci_high,
        "n": evidence.n, "unit": unit, "n_missing": evidence.n_missing, "test": evidence.test,
        "p_value": evidence.p_value,
    }


def claims(scored: ExperimentScores, alpha: float = ALPHA) -> pd.DataFrame:
    """The paper's claims for an experiment (its table's ``pairs``), weighed on the reproduced
    scores: the headline rows across tasks first (experiments with two or more tasks), then one
    row per task and pair; Holm over all rows. The one place claims are decided: every table
    calls this. Columns: see the module docstring and docs/contracts.md."""
    spec, scores, summary = scored.spec, scored.scores, scored.summary
    pub = load_published(spec.paper_table)
    at_size = spec.table.claim_at_size
    task_rows: list[dict[str, Any]] = []
    families: dict[tuple, list[tuple[dict[str, str], dict[str, str], float, float]]] = {}
    for a, b, metric in spec.table.pairs(spec):
        show = {k for k in ("attention", "size") if a[k] != b[k]}
        pa = _published(pub, metric, a["task"], spec.paper_model(a["model"]), a["attention"], spec.paper_size(a["size"]))[0]
        pb = _published(pub, metric, b["task"], spec.paper_model(b["model"]), b["attention"], spec.paper_size(b["size"]))[0]
        expected, source = _direction(pa, pb, metric)
        la, lb = _label(spec, a, show), _label(spec, b, show)
        claim = (f"{la} {_WORDS[expected]} {lb} in {METRIC_LABELS[metric]} on {a['task'].split('_')[0]}"
                 + (f" at {a['size']}" if at_size else ""))
        x, y, unit = paired_units(scores, metric, a, b)
        reproduced = (_mean_of(summary, a, metric), _mean_of(summary, b, metric))
        task_rows.append(_row(spec, claim, a["task"], metric, la, lb, source, expected, (pa, pb), reproduced,
                              x, y, unit, headline=False))
        family = (tuple(sorted((k, v) for k, v in a.items() if k != "task")),
                  tuple(sorted((k, v) for k, v in b.items() if k != "task")), metric, la, lb)
        families.setdefault(family, []).append((a, b, pa, pb))

    headlines: list[dict[str, Any]] = []
    if len(spec.tasks) >= 2:
        for (fa, _, metric, la, lb), members in families.items():
            if len(members) < 2:
                continue
            a_means = np.array([_mean_of(summary, a, metric) for a, _, _, _ in members])
            b_means = np.array([_mean_of(summary, b, metric) for _, b, _, _ in members])
            pa = np.array([m[2] for m in members])
            pb = np.array([m[3] for m in members])
            if np.isnan(pa).any() or np.isnan(pb).any():
                expected, source = 1, "paper's general claim"
            else:
                expected = _direction(float(pa.mean()), float(pb.mean()), metric)[0]
                source = "published values (mean over tasks)"
            size = dict(fa).get("size", "")
            claim = (f"{la} {_WORDS[expected]} {lb} in {METRIC_LABELS[metric]} across the {len(members)} tasks"
                     + (f" at {size}" if at_size else ""))
            headlines.append(_row(spec, claim, "all", metric, la, lb, source, expected,
                                  (float(pa.mean()), float(pb.mean())),
                                  (float(a_means.mean()), float(b_means.mean())), a_means, b_means, "tasks",
                                  headline=True))

    out = pd.DataFrame(headlines + task_rows, columns=CLAIM_COLUMNS[:-2])
    out["p_holm"] = holm(out["p_value"].to_numpy(dtype=float))
    out["verdict"] = [verdict(e, p, int(x), lower_is_better=m in LOWER_IS_BETTER, alpha=alpha)
                      for e, p, x, m in zip(out["effect"], out["p_holm"], out["expected"], out["metric"])]
    return out[CLAIM_COLUMNS]


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
            diffs.append(f"{model}: Gaussian random weights (normal(0, 0.02), near the identity), "
                         "a control the paper does not have")
        elif parse_model_name(model).control == "shuffled":
            diffs.append(f"{model}: every pretrained weight tensor permuted (same values and output scale), "
                         "a control the paper does not have")
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
