"""Published vs reproduced: value tables, the paper's claims tested, and the provenance header.

* :func:`comparison_values`: every reproduced cell of an experiment's table beside the number the
  paper prints for the model it stands for (``llm_for_paper``), with the difference
  (reproduced - published).
* :func:`paper_claims` (and :func:`claims` for one experiment): the paper's pairwise claims ("ViT +
  Llama beats ViT on Task01 Dice", "HA beats SA", ...; each table object lists its pairs), plus
  each pretrained LLM block against its own controls, weighed on the reproduced scores with
  :mod:`medvisionllama.paper.verdicts` and decided once for the whole paper: per claim the mean
  paired difference with the sign-flip test (or, with folds, the corrected resampled t) and its
  inverted interval, n and unit, mde, a family (``primary``, ``per-task``,
  ``secondary-metrics``, ``control``) and a hypothesis id, the raw and the adjusted p (Holm within
  the family over the paper, behind a serial gate; :func:`adjust`) and a verdict: ``supported``,
  ``contradicted``, ``inconclusive`` or ``not testable``. An experiment with two or more tasks
  also gets one **headline** row per pair and metric: the test over the per-task means (Demšar
  2006, JMLR 7:1-30), n = tasks; headline rows come first. The direction claimed is the one the
  published numbers show (lower is better for HD95 and misses; equal published numbers claim no
  difference, weighed with TOST); where the paper prints no number for a pair, the paper's
  general claim (the first model or attention is better) is used, and ``claim_source`` says so.
* :func:`provenance_header`: the lines every comparison starts with, saying how the
  configuration differs from the paper's, so a demo number is never read as a reproduction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from medvisionllama.paper.published import (
    LOWER_IS_BETTER, METRIC_LABELS, PAPER_SETUP, TABLES, load_published, model_label,
)
from medvisionllama.paper.spec import ExperimentSpec
from medvisionllama.tasks import task_info
from medvisionllama.paper.summary import ExperimentScores, paired_replicates
from medvisionllama.paper.verdicts import (
    ALPHA, EQUIVALENCE_MARGIN, CorrectedT, Evidence, SignFlip, holm, holm_levels, mde, paired_evidence, tost_p,
    verdict,
)
from medvisionllama.vocabulary import parse_model_name

#: what each claims table says about its units and families, beside ``verdicts.METHOD_NOTE``
UNITS_NOTE = ("Units: test cases of one run with one seed (the claim is then about two trained networks: training "
              "variability is not in the analysis); per-seed means with several seeds; per-(seed, fold) means with "
              "cross-validation; per-task means for cross-task rows (n = tasks). Families (one hypothesis, one "
              "verdict across the paper): primary = each table's cross-task Dice headline, then per-task (Dice on "
              "one task), then secondary-metrics; Holm within a family, and a serial gate: a family decides only when "
              "every testable hypothesis of the families before it was rejected (family-wise error 5 % over the "
              "paper). control = an LLM block against its own random or shuffled control, Holm at 5 % on its own. "
              "Detection apart from boundary quality (Metrics Reloaded): HD95 rows weigh only the cases where neither "
              "run missed or falsely predicted a class; each HD95 row is followed by a 'misses' row (share of such "
              "cases; the sign-flip test on them is the exact McNemar test). For HD95 and misses lower is better.")


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
    sign = -1.0 if metric in LOWER else 1.0
    return int(np.sign(sign * (pa - pb))), "published values"


#: the claims' own metric beside the paper's: the share of cases with a missed or falsely
#: predicted class (Metrics Reloaded: detection reported apart from boundary quality)
MISSES = "misses"
CLAIM_LABELS = {**METRIC_LABELS, MISSES: "misses (cases with a missed or false class)"}
LOWER = LOWER_IS_BETTER | {MISSES}


def claim_scores(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The per-case scores a claim on ``metric`` is weighed on. HD95: only the cases where the run
    found every class and predicted none falsely (a penalised case's HD95 is the image diagonal,
    a detection failure, not boundary quality); ``misses``: 1 for a penalised case, else 0. The
    other metrics: every case, a miss with its worst value."""
    if metric == "hd95":
        return scores[scores["hd95_status"].astype(str) != "penalised"]
    if metric == MISSES:
        return scores.assign(**{MISSES: (scores["dice_status"].astype(str) == "penalised").astype(float)})
    return scores


def _cell_mean(scores: pd.DataFrame, sel: dict[str, str], metric: str) -> float:
    """A run group's mean of ``metric`` as the table computes a cell: the mean of the seed means."""
    mask = np.ones(len(scores), dtype=bool)
    for key, value in sel.items():
        mask &= (scores[key] == value).to_numpy()
    hit = scores[mask]
    if hit.empty:
        return math.nan
    by_seed = hit.groupby("seed")[metric]
    means = by_seed.mean()
    means[by_seed.count() < by_seed.size()] = math.nan
    return float(means.mean(skipna=False))


_WORDS = {1: "better than", -1: "worse than", 0: "equal to"}
#: the columns of :func:`claims`, in order (docs/contracts.md, "Round 2 contracts")
CLAIM_COLUMNS = [
    "experiment", "family", "hypothesis", "headline", "task", "metric", "a", "b", "claim", "claim_source", "expected",
    "better", "published_a", "published_b", "reproduced_a", "reproduced_b", "paper_effect", "effect", "ci_low",
    "ci_high", "n", "unit", "n_missing", "differences", "test", "p_value", "p_adjusted", "mde", "verdict",
]
#: the paper's families in the order of the serial gate; ``control`` stands apart (its own alpha)
FAMILY_ORDER = ("primary", "per-task", "secondary-metrics")
FAMILIES = (*FAMILY_ORDER, "control")


def _group_key(sel: dict[str, str]) -> str:
    return f"{sel['model']}/{sel['attention']}/{sel['size']}"


def _family(a: dict[str, str], b: dict[str, str], metric: str, headline: bool) -> str:
    """``control`` (an LLM block against its own random or shuffled control), else ``primary``
    (the cross-task Dice headline), ``per-task`` (Dice on one task) or ``secondary-metrics``."""
    ma, mb = parse_model_name(a["model"]), parse_model_name(b["model"])
    if ma.pretrained and mb.control is not None and mb.llm == ma.llm:
        return "control"
    if metric != "dice":
        return "secondary-metrics"
    return "primary" if headline else "per-task"


def _row(spec: ExperimentSpec, claim: str, task: str, metric: str, la: str, lb: str, source: str, expected: int,
         published: tuple[float, float], reproduced: tuple[float, float], evidence: Evidence, headline: bool,
         family: str, hypothesis: str) -> dict[str, Any]:
    return {
        "experiment": spec.name, "family": family, "hypothesis": hypothesis, "headline": headline, "task": task,
        "metric": metric, "a": la, "b": lb, "claim": claim, "claim_source": source, "expected": expected,
        "better": "lower is better" if metric in LOWER else "higher is better",
        "published_a": published[0], "published_b": published[1],
        "reproduced_a": reproduced[0], "reproduced_b": reproduced[1],
        "paper_effect": published[0] - published[1], "effect": evidence.effect,
        "n": evidence.n, "unit": evidence.unit, "n_missing": evidence.n_missing, "_evidence": evidence,
    }


#: where a custom experiment's claimed direction comes from (it has no published numbers)
CUSTOM_SOURCE = "the experiment's order (the first model is claimed better)"


def _experiment_rows(scored: ExperimentScores) -> list[dict[str, Any]]:
    """Every claim of one experiment with its evidence, headline rows first (not yet adjusted)."""
    spec, scores = scored.spec, scored.scores
    pub = load_published(spec.paper_table)
    at_size = spec.table.claim_at_size
    task_rows: list[dict[str, Any]] = []
    families: dict[tuple, list[tuple[dict[str, str], dict[str, str], float, float]]] = {}
    pairs = [(a, b, m) for a, b, metric in spec.table.pairs(spec)
             for m in ((metric, MISSES) if metric == "hd95" else (metric,))]  # a misses row after each HD95 row
    for a, b, metric in pairs:
        show = {k for k in ("attention", "size") if a[k] != b[k]}
        pa, pb = (_published(pub, metric, s["task"], spec.paper_model(s["model"]), s["attention"],
                             spec.paper_size(s["size"]))[0] for s in (a, b))
        control = _family(a, b, metric, False) == "control"
        expected, source = (1, "our control (the paper has none)") if control else _direction(pa, pb, metric)
        if not spec.table.published and not control:
            source = CUSTOM_SOURCE
        la, lb = _label(spec, a, show), _label(spec, b, show)
        task = a["task"].split("_")[0]
        claim = (f"{la} {_WORDS[expected]} {lb} in {CLAIM_LABELS[metric]} on {task}"
                 + (f" at {a['size']}" if at_size else ""))
        weighed = claim_scores(scores, metric)
        x, y, unit, ratio = paired_replicates(weighed, metric, a, b)
        evidence = paired_evidence(x, y, unit=unit, test_train_ratio=ratio)
        reproduced = (_cell_mean(weighed, a, metric), _cell_mean(weighed, b, metric))
        hypothesis = f"{_group_key(a)}|{_group_key(b)}|{metric}|{task}"
        task_rows.append(_row(spec, claim, a["task"], metric, la, lb, source, expected, (pa, pb), reproduced,
                              evidence, False, _family(a, b, metric, False), hypothesis))
        family = (tuple(sorted((k, v) for k, v in a.items() if k != "task")),
                  tuple(sorted((k, v) for k, v in b.items() if k != "task")), metric, la, lb)
        families.setdefault(family, []).append((a, b, pa, pb))

    headlines: list[dict[str, Any]] = []
    if len(spec.tasks) >= 2:
        for (_, _, metric, la, lb), members in families.items():
            if len(members) < 2:
                continue
            a0, b0 = members[0][0], members[0][1]
            weighed = claim_scores(scores, metric)
            a_means = np.array([_cell_mean(weighed, a, metric) for a, _, _, _ in members])
            b_means = np.array([_cell_mean(weighed, b, metric) for _, b, _, _ in members])
            pa = np.array([m[2] for m in members])
            pb = np.array([m[3] for m in members])
            family = _family(a0, b0, metric, True)
            if family == "control":
                expected, source = 1, "our control (the paper has none)"
            elif not spec.table.published:
                expected, source = 1, CUSTOM_SOURCE
            elif np.isnan(pa).any() or np.isnan(pb).any():
                expected, source = 1, "paper's general claim"
            else:
                expected = _direction(float(pa.mean()), float(pb.mean()), metric)[0]
                source = "published values (mean over tasks)"
            claim = (f"{la} {_WORDS[expected]} {lb} in {CLAIM_LABELS[metric]} across the {len(members)} tasks"
                     + (f" at {a0['size']}" if at_size else ""))
            evidence = paired_evidence(a_means, b_means, unit="tasks")
            hypothesis = f"{_group_key(a0)}|{_group_key(b0)}|{metric}|ALL"
            headlines.append(_row(spec, claim, "all", metric, la, lb, source, expected,
                                  (float(pa.mean()), float(pb.mean())),
                                  (float(a_means.mean()), float(b_means.mean())), evidence, True, family, hypothesis))
    return headlines + task_rows


def _same(one: Evidence, two: Evidence) -> bool:
    return one.differences == two.differences and one.unit == two.unit


def _row_p(row: dict[str, Any]) -> float:
    """The p a row enters its family with: the difference test's, or for a "no difference" claim
    the equivalence test's (TOST)."""
    evidence: Evidence = row["_evidence"]
    if row["expected"] == 0:
        return tost_p(evidence, EQUIVALENCE_MARGIN[row["metric"]])
    return evidence.p_value


def _mde_at(evidence: Evidence, level: float) -> float:
    """The minimum detectable effect at the level the row is tested at (80 % power); infinite where
    the sign-flip test cannot reach that level at this n (its smallest p is 2 / 2**k)."""
    if isinstance(evidence.inference, SignFlip):
        if 2.0 / 2 ** np.count_nonzero(evidence.differences) > level:
            return math.inf
        return mde(evidence.differences, evidence.n, alpha=level)
    if isinstance(evidence.inference, CorrectedT):
        return mde(evidence.differences, evidence.n, alpha=level, inflation=1.0 + evidence.n * evidence.inference.ratio)
    return evidence.mde


def _fmt_differences(values: tuple[float, ...]) -> str:
    return ";".join(f"{v:.6g}" for v in values)


def adjust(p: dict[str, dict[str, float]], alpha: float = ALPHA) -> tuple[dict[str, float], dict[str, float], set[str]]:
    """The paper's hierarchy on raw p-values ``{family: {hypothesis: p}}`` (NaN: not testable).

    Returns the adjusted p of each hypothesis (Holm within its family; in the serial order of
    :data:`FAMILY_ORDER` at least the largest adjusted p of the families before), the level its
    interval is taken at (:func:`.verdicts.holm_levels` in an open family; ``alpha / m`` in a
    family whose gate is closed) and the hypotheses whose gate is closed. Families not in
    :data:`FAMILY_ORDER` (``control``) are adjusted on their own.
    """
    adjusted: dict[str, float] = {}
    level: dict[str, float] = {}
    closed: set[str] = set()
    gate = 0.0
    for family, members in p.items():
        keys = list(members)
        raw = np.array([members[k] for k in keys], dtype=float)
        if not len(keys):
            continue
        own, levels = holm(raw), holm_levels(raw, alpha)
        serial = family in FAMILY_ORDER
        g = gate if serial else 0.0
        tested = np.isfinite(raw)
        for k, adj, lv in zip(keys, own, levels):
            adjusted[k] = max(float(adj), g) if not math.isnan(adj) else math.nan
            level[k] = float(lv)
            if g >= alpha and not math.isnan(adj):
                level[k] = alpha / int(tested.sum())
                closed.add(k)
        if serial and tested.any():
            gate = max(gate, float(np.nanmax([adjusted[k] for k in keys])))
    return adjusted, level, closed


def decide(rows: list[dict[str, Any]], alpha: float = ALPHA) -> pd.DataFrame:
    """Adjust and decide claims rows of the whole paper at once (see :func:`paper_claims`)."""
    # one hypothesis, one content: a repeated id with other data is a different hypothesis
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        first = seen.get(row["hypothesis"])
        if first is not None and not _same(first["_evidence"], row["_evidence"]):
            row["hypothesis"] += f"@{row['experiment']}"
            first = seen.get(row["hypothesis"])
        if first is None:
            seen[row["hypothesis"]] = row
    hyps = list(seen.values())
    p = {h["hypothesis"]: _row_p(h) for h in hyps}
    adjusted, level, closed = adjust({f: {h["hypothesis"]: p[h["hypothesis"]] for h in hyps if h["family"] == f}
                                      for f in FAMILIES}, alpha)
    gate_note = {k: (f"; not decided: an earlier family of the paper's hierarchy has a hypothesis not rejected "
                     f"(serial gate)") for k in closed}
    out = []
    for row in rows:
        h = row["hypothesis"]
        evidence: Evidence = seen[h]["_evidence"]
        lower = row["metric"] in LOWER
        margin = EQUIVALENCE_MARGIN[row["metric"]]
        rec = {k: v for k, v in seen[h].items() if not k.startswith("_")}
        rec.update({k: row[k] for k in ("experiment", "claim", "a", "b", "published_a", "published_b",
                                        "paper_effect", "claim_source", "expected", "headline", "task")})
        if not evidence.tested:
            rec.update(ci_low=math.nan, ci_high=math.nan, differences=_fmt_differences(evidence.differences),
                       test=evidence.test, p_value=math.nan, p_adjusted=math.nan, mde=evidence.mde,
                       verdict="not testable")
            out.append(rec)
            continue
        a_row = level[h]
        equivalence = row["expected"] == 0
        interval = evidence.interval(1 - (2 * a_row if equivalence else a_row))
        word = verdict(evidence.effect, adjusted[h], int(row["expected"]), lower_is_better=lower, alpha=alpha,
                       interval=interval if equivalence else None, margin=margin if equivalence else None)
        if h in gate_note:
            word = "inconclusive"
        kind = f"TOST, margin +/-{margin:g}, interval at {1 - 2 * a_row:.2%}" if equivalence \
            else f"interval at {1 - a_row:.2%}"
        rec.update(ci_low=interval[0], ci_high=interval[1], differences="",
                   test=f"{evidence.test}; {kind}{gate_note.get(h, '')}", p_value=p[h], p_adjusted=adjusted[h],
                   mde=_mde_at(evidence, a_row), verdict=word)
        out.append(rec)
    return pd.DataFrame(out, columns=CLAIM_COLUMNS)


def paper_claims(scored: list[ExperimentScores], alpha: float = ALPHA) -> dict[str, pd.DataFrame]:
    """The claims of every experiment of the paper, decided together (the one place claims are
    decided; every table calls this), by experiment name.

    Families (``family``): ``primary`` (each table's cross-task Dice headline), ``per-task`` (Dice
    on one task), ``secondary-metrics`` (the other metrics, across and per task) and ``control``
    (an LLM block against its own random or shuffled control, a question the paper does not ask).
    Each distinct hypothesis (``hypothesis`` id: both run groups, metric, task or ``ALL``) is
    adjusted once: Holm within its family over the whole paper, and a serial gate (Westfall &
    Krishen 2001): a family's adjusted p is at least the largest adjusted p of the families before
    it (primary, then per-task, then secondary-metrics), so a later family decides only when every
    testable hypothesis before it was rejected; the paper's family-wise error stays at ``alpha``.
    The control family has its own ``alpha``. A hypothesis printed in several tables is one row
    content wherever printed. Not testable hypotheses stay out of the families and the gate.
    """
    out: dict[str, pd.DataFrame] = {}
    paper = [e for e in scored if e.spec.table.published]
    if paper:
        decided = decide([row for experiment in paper for row in _experiment_rows(experiment)], alpha)
        out.update({e.spec.name: decided[decided["experiment"] == e.spec.name].reset_index(drop=True) for e in paper})
    for experiment in scored:  # a custom experiment is a study of its own: its own hierarchy and alpha
        if not experiment.spec.table.published:
            out[experiment.spec.name] = decide(_experiment_rows(experiment), alpha)
    return {e.spec.name: out[e.spec.name] for e in scored}


def claims(scored: ExperimentScores, alpha: float = ALPHA) -> pd.DataFrame:
    """The claims of one experiment, decided as a paper of this one experiment (see
    :func:`paper_claims`)."""
    return paper_claims([scored], alpha)[scored.spec.name]


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
    sizes = ", ".join(spec.sizes)
    if not spec.table.published:  # a user's own study: nothing of the paper's to differ from
        return [f"Custom experiment '{spec.name}': the user's own models and tasks; no published numbers, "
                "its claims (first model better than each other) are a study of their own, adjusted apart "
                "from the paper's.",
                f"Input size {sizes}; seeds {', '.join(map(str, spec.seeds))}.",
                *[str(n) for n in prov.get("notes", []) or []]]
    diffs = configuration_differences(spec, prov)
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
