"""Spec parsing, aggregation, table layouts, comparison and claims, metrics.json."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from medvisionllama.errors import InputError
from medvisionllama.paper.aggregate import aggregate, per_case_means, read_run
from medvisionllama.paper.compare import (
    CLAIM_COLUMNS, UNITS_NOTE, adjust, claims, comparison_values, paper_claims, provenance_header,
)
from medvisionllama.paper.metrics_json import metrics_summary
from medvisionllama.paper.spec import ExperimentSpec, parse_experiments
from medvisionllama.paper.summary import case_scores, score_experiment, summarize
from medvisionllama.paper.tables import build_table, main as tables_main
from medvisionllama.paper.verdicts import METHOD_NOTE, holm, paired_evidence
from test_paper_fixtures import DIAGONAL, grid, make_long, metrics_rows, write_run_dir

T1, T3 = "Task01_BrainTumour", "Task03_Liver"


def build_table_of(long, s):
    return build_table(score_experiment(long, s))
MAIN = {"tasks": [T1, T3], "models": ["vit", "smollm2-135m"], "sizes": ["32x32x16"],
        "llm_for_paper": {"smollm2-135m": "llama3.1-8b"}}


def spec(name="main", **kw):
    return parse_experiments({name: {**MAIN, **kw}})[0]


def test_spec_validation_and_required_runs():
    s = spec(seeds=[0, 1])
    assert len(s.required_runs()) == 2 * 2 * 2
    cap = spec("capacity", models=["vit", "mlp", "smollm2-135m"], attention=["hybrid-sequential", "spatial"])
    assert {(r.model, r.attention) for r in cap.required_runs()} == {
        ("vit", "hybrid-sequential"), ("mlp", "hybrid-sequential"), ("smollm2-135m", "hybrid-sequential"),
        ("smollm2-135m", "spatial")}
    with pytest.raises(InputError, match="unknown kind"):
        spec("mystery")
    with pytest.raises(InputError, match="exactly one"):
        spec(sizes=["16x16x8", "32x32x16"])
    with pytest.raises(InputError, match="llm_for_paper"):
        spec(llm_for_paper={"other": "llama3.1-8b"})


def test_per_case_mean_is_plain_with_a_status():
    m = metrics_rows(T1, "vit", "hybrid-sequential", "32x32x16", 0, {"c1": 0.6, "c2": 0.6}, missed={("c1", 1)})
    bg = m.iloc[[0]].assign(class_index=0, class_name="background", dice=0.99)
    means = per_case_means(pd.concat([m, bg])).set_index("case_id")
    assert means.loc["c2", "dice"] == pytest.approx(0.6)  # background ignored
    assert means.loc["c1", "dice"] == pytest.approx(0.65 / 2)  # the miss counts with Dice 0
    assert means.loc["c1", "hd95"] == pytest.approx((DIAGONAL + 20 * (1 - 0.65)) / 2)  # and HD95 = diagonal
    assert means.loc["c1", "hd95_status"] == "penalised" and means.loc["c2", "hd95_status"] == "defined"
    assert means.loc["c1", "accuracy_status"] == "defined"
    assert (means["class_name"] == "mean").all() and (means["class_index"] == -1).all()
    both_empty = m[m["case_id"] == "c2"].copy()
    both_empty["dice_status"] = "empty"
    assert per_case_means(both_empty)["dice_status"].iloc[0] == "empty"  # empty only when every class is
    both_empty.loc[both_empty.index[0], "dice_status"] = "defined"
    assert per_case_means(both_empty)["dice_status"].iloc[0] == "defined"
    skipped = m.copy()
    skipped["hd95"], skipped["hd95_status"] = np.nan, "skipped"
    assert per_case_means(skipped)["hd95"].isna().all()


def test_a_miss_is_never_rewarded_in_a_table():
    """A model that misses a present class (HD95 NaN before issue 10) gets a worse HD95 cell than one
    that finds it poorly, and the cell says how many cases were penalised."""
    runs = {(T1, "vit", "hybrid-sequential", "32x32x16", 0): {"a": 0.3, "b": 0.3},
            (T1, "smollm2-135m", "hybrid-sequential", "32x32x16", 0): {"a": 0.35, "b": 0.35}}
    long = make_long(runs, missed={(T1, "smollm2-135m", "hybrid-sequential", "32x32x16", 0): {("a", 1), ("b", 1)}})
    scored = score_experiment(long, spec(tasks=[T1]))
    vit, llm = scored.cell(T1, "vit", "hybrid-sequential", "32x32x16"), scored.cell(T1, "smollm2-135m", "hybrid-sequential", "32x32x16")
    assert llm["hd95_mean"] > vit["hd95_mean"] and llm["dice_mean"] < vit["dice_mean"]
    assert (llm["hd95_n_penalised"], vit["hd95_n_penalised"]) == (2, 0)
    table = build_table(scored)
    assert table.loc["HD95", ("Task01", "ViT + SmolLM2-135M")].endswith("†2")
    assert "†" not in table.loc["HD95", ("Task01", "ViT")]
    values = comparison_values(scored).set_index(["model", "metric"])
    assert values.loc[("smollm2-135m", "hd95"), "n_penalised"] == 2 and values.loc[("vit", "dice"), "n_penalised"] == 0


def test_nan_in_a_computed_metric_and_old_metrics_are_refused(tmp_path):
    run = write_run_dir(tmp_path / "runs", T1, "vit", "hybrid-sequential", "32x32x16", 0, {"a": 0.5})
    metrics = pd.read_csv(run / "metrics.csv")
    metrics.loc[0, "hd95"] = np.nan  # status still "defined"
    metrics.to_csv(run / "metrics.csv", index=False)
    with pytest.raises(InputError, match=r"metrics\.csv: hd95 is NaN although computed"):
        read_run(run)
    metrics.drop(columns=[c for c in metrics.columns if c.endswith("_status")]).to_csv(run / "metrics.csv", index=False)
    with pytest.raises(InputError, match="no metric status columns.*re-evaluate the run"):
        read_run(run)


def test_aggregate_reads_run_folders(tmp_path):
    for key, cases in grid([T1], ["vit", "smollm2-135m"], n_cases=3).items():
        write_run_dir(tmp_path / "runs", *key, cases)
    long = aggregate([tmp_path / "runs"], tmp_path / "long.csv", tmp_path / "curves.csv")
    assert long["run"].nunique() == 2 and (long["class_name"] == "mean").sum() == 6
    assert long["params_total"].max() == 4.1e6 and long["epochs"].iloc[0] == 4 and set(long["device"]) == {"cpu"}
    assert {"dice_status", "hd95_status"} <= set(long.columns)
    assert set(long.loc[long["class_name"] == "mean", "dice_status"]) == {"defined"}
    assert len(pd.read_csv(tmp_path / "curves.csv")) == 8
    with pytest.raises(InputError, match="missing run.json"):
        (tmp_path / "runs" / T1 / "vit" / "hybrid-sequential" / "32x32x16" / "seed0" / "run.json").unlink()
        aggregate([tmp_path / "runs"], tmp_path / "long2.csv")


def test_summary_mean_of_seed_means_and_pooled_std():
    long = make_long({(T1, "vit", "hybrid-sequential", "32x32x16", 0): {"a": 0.5, "b": 0.7},
                      (T1, "vit", "hybrid-sequential", "32x32x16", 1): {"a": 0.8, "b": 0.8, "c": 0.8}})
    s = ExperimentSpec("x", "main", (T1,), ("vit", "mlp"), seeds=(0, 1), sizes=("32x32x16",))
    rows = long[long["class_name"] == "mean"]
    out = summarize(rows.assign(size=rows["size"].astype(str)), ["dice"]).iloc[0]
    assert out["dice_mean"] == pytest.approx((0.6 + 0.8) / 2)
    assert out["dice_std"] == pytest.approx(np.std([0.5, 0.7, 0.8, 0.8, 0.8], ddof=1))
    assert out["n_cases"] == 5 and out["n_seeds"] == 2
    with pytest.raises(InputError, match="missing from the long table: .*mlp"):
        case_scores(long, s)


def test_main_table_layout_and_formatting():
    long = make_long({(T1, "vit", "hybrid-sequential", "32x32x16", 0): {"a": 0.70, "b": 0.74},
                      (T1, "smollm2-135m", "hybrid-sequential", "32x32x16", 0): {"a": 0.80, "b": 0.90},
                      (T3, "vit", "hybrid-sequential", "32x32x16", 0): {"a": 0.5, "b": 0.5},
                      (T3, "smollm2-135m", "hybrid-sequential", "32x32x16", 0): {"a": 0.6, "b": 0.6}})
    table = build_table_of(long, spec())
    assert list(table.index) == ["Dice", "Accuracy", "Precision", "Recall", "Jaccard", "HD95"]
    assert list(table.columns) == [("Task01", "ViT"), ("Task01", "ViT + SmolLM2-135M"),
                                   ("Task03", "ViT"), ("Task03", "ViT + SmolLM2-135M")]
    assert table.loc["Dice", ("Task01", "ViT")] == f"0.72 ± {np.std([0.7, 0.74], ddof=1):.2f}"
    assert table.loc["Dice", ("Task03", "ViT")] == "0.50 ± 0.00"
    assert table.loc["HD95", ("Task01", "ViT + SmolLM2-135M")] == "3.0 ± 1.4"


def test_other_layouts():
    g = grid([T1, T3], ["vit", "mlp", "smollm2-135m"], attention=("hybrid-sequential", "spatial", "hybrid-parallel"),
             sizes=("16x16x8", "32x32x16"))
    long = make_long(g)
    llm = build_table_of(long, spec("llm_comparison", models=["vit", "mlp", "smollm2-135m"]))
    assert list(llm.index) == ["Params (M)", "Task01", "Task03"] and llm.loc["Params (M)", "ViT"] == "0.84"
    cap = build_table_of(long, spec("capacity", models=["vit", "mlp", "smollm2-135m"],
                                 attention=["hybrid-sequential", "spatial"]))
    assert list(cap.columns) == ["Params (M)", "HA", "SA", "Task01", "Task03"] and len(cap) == 4
    assert (cap["SA"] == "✓").sum() == 1
    att = build_table_of(long, spec("attention_strategy", models=["smollm2-135m"], attention=["hybrid-sequential", "hybrid-parallel"]))
    assert list(att.index) == ["Sequential", "Parallel"] and list(att.columns) == ["Params (M)", "Task01 Dice", "Task03 Dice"]
    size = build_table_of(long, spec("input_size", tasks=[T1], sizes=["16x16x8", "32x32x16"]))
    assert list(size.columns) == [("16×16×8", "TT"), ("16×16×8", "Device"), ("16×16×8", "DSC"),
                                  ("32×32×16", "TT"), ("32×32×16", "Device"), ("32×32×16", "DSC")]
    assert size.iloc[0, 0] == "36.0 s"  # below 0.1 h: seconds, with the unit
    assert size.iloc[0, 1] == "cpu"  # the device each training time was measured on
    cx = build_table_of(long, spec("complexity", tasks=[T1], models=["vit", "smollm2-135m"]))
    assert list(cx.columns) == ["Params (M)", "Task01 Dice", "Task01 HD95"]


def test_comparison_values_and_claims():
    g = grid([T1], ["vit", "smollm2-135m"], n_cases=8, gain=0.1)
    long = make_long(g)
    s = spec(tasks=[T1])
    values = comparison_values(score_experiment(long, s)).set_index(["model", "metric"])
    row = values.loc[("smollm2-135m", "dice")]
    assert row["published_mean"] == 0.84 and row["paper_model"] == "llama3.1-8b"
    assert row["difference"] == pytest.approx(row["reproduced_mean"] - 0.84) and row["difference"] < 0
    c = claims(score_experiment(long, s)).set_index("metric")
    assert not c["headline"].any()  # one task: no cross-task row
    dice = c.loc["dice"]
    assert dice["verdict"] == "supported" and dice["unit"] == "cases" and dice["n"] == 8
    assert dice["ci_low"] < dice["effect"] < dice["ci_high"] and dice["ci_low"] > 0
    assert "sign-flip" in dice["test"] and dice["p_value"] < 0.05
    assert dice["effect"] == pytest.approx(dice["reproduced_a"] - dice["reproduced_b"])
    # one task: Dice is the per-task family (first); the five other metrics are gated behind it
    assert dice["family"] == "per-task" and dice["p_adjusted"] == pytest.approx(dice["p_value"])
    other = c.drop(index="dice")
    assert (other["family"] == "secondary-metrics").all()
    expected = np.maximum(holm(other["p_value"].to_numpy()), dice["p_adjusted"])
    assert other["p_adjusted"].to_numpy() == pytest.approx(expected, nan_ok=True)
    assert (c["p_adjusted"].dropna() >= c["p_value"].dropna()).all()
    assert dice["hypothesis"] == "smollm2-135m/hybrid-sequential/32x32x16|vit/hybrid-sequential/32x32x16|dice|Task01"
    assert dice["mde"] > 0 and dice["differences"] == ""
    # HD95 (lower is better): the effect is negative when a is better, and that supports the claim
    assert c.loc["hd95", "effect"] < 0 and c.loc["hd95", "verdict"] == "supported"
    worse = make_long(grid([T1], ["vit", "smollm2-135m"], n_cases=8, gain=-0.1))
    assert claims(score_experiment(worse, s)).set_index("metric").loc["dice", "verdict"] == "contradicted"
    same = make_long(grid([T1], ["vit", "smollm2-135m"], n_cases=8, gain=0.0, seed=3))
    assert claims(score_experiment(same, s)).set_index("metric").loc["dice", "verdict"] == "inconclusive"
    # the Monte Carlo signs are seeded: the same scores give byte-identical claims
    pd.testing.assert_frame_equal(claims(score_experiment(long, s)), claims(score_experiment(long, s)))


def test_claims_too_few_cases_and_the_cross_task_headline():
    tasks = ["Task01_BrainTumour", "Task02_Heart", "Task03_Liver", "Task04_Hippocampus", "Task05_Prostate",
             "Task06_Lung", "Task07_Pancreas", "Task08_HepaticVessel"]
    long = make_long(grid(tasks, ["vit", "smollm2-135m"], n_cases=2, gain=0.1))
    scored = score_experiment(long, spec(tasks=tasks))
    c = claims(scored)
    per_task = c[~c["headline"]]
    assert per_task["p_value"].isna().all() and (per_task["verdict"] == "not testable").all()
    scored_rows = per_task[per_task["metric"] != "misses"]  # no misses here: all differences zero
    assert scored_rows["test"].str.contains("not testable: n = 2 cases").all()
    assert per_task["ci_low"].isna().all() and (per_task["differences"].str.count(";") == 1).all()
    head = c[c["headline"]]
    assert list(c["headline"].iloc[: len(head)]) == [True] * len(head)  # headline rows come first
    assert len(head) == 7 and set(head["unit"]) == {"tasks"}  # six metrics and the misses and (head["n"] == len(tasks)).all()
    dice = head.set_index("metric").loc["dice"]
    assert "across the 8 tasks" in dice["claim"]
    # computed over the per-task means
    a = [scored.cell(t, "smollm2-135m", "hybrid-sequential", "32x32x16")["dice_mean"] for t in tasks]
    b = [scored.cell(t, "vit", "hybrid-sequential", "32x32x16")["dice_mean"] for t in tasks]
    expected = paired_evidence(a, b, unit="tasks")
    assert dice["effect"] == pytest.approx(expected.effect) and dice["p_value"] == pytest.approx(expected.p_value)
    # 8 tasks, all better: exact p = 2/256; the Dice headline is the primary family, alone, so no
    # other row dilutes it (before: Holm over every row of the table)
    assert dice["p_value"] == pytest.approx(2 / 256) and dice["p_adjusted"] == pytest.approx(2 / 256)
    assert dice["family"] == "primary" and dice["verdict"] == "supported" and dice["ci_low"] > 0
    assert (head.set_index("metric").drop(index="dice")["family"] == "secondary-metrics").all()


def test_claims_use_seeds_as_units_and_equal_published_numbers():
    long = make_long(grid([T1], ["vit", "smollm2-135m"], seeds=(0, 1, 2), n_cases=4))
    c = claims(score_experiment(long, spec(tasks=[T1], seeds=[0, 1, 2]))).set_index("metric")
    assert (c["unit"] == "seeds").all() and (c["n"] == 3).all()  # never 3 seeds x 4 cases
    scores = score_experiment(long, spec(tasks=[T1], seeds=[0, 1, 2])).scores
    per_seed = scores[scores["model"] == "smollm2-135m"].groupby("seed")["dice"].mean() \
        - scores[scores["model"] == "vit"].groupby("seed")["dice"].mean()
    assert c.loc["dice", "effect"] == pytest.approx(per_seed.mean())
    assert "not testable: n = 3 seeds" in c.loc["dice", "test"] and c.loc["dice", "verdict"] == "not testable"


def test_a_claim_of_no_difference_is_never_supported():
    from medvisionllama.paper.verdicts import verdict

    assert verdict(0.2, 0.01, 0) == "contradicted"
    assert verdict(0.2, 0.5, 0) == "inconclusive"
    assert verdict(-0.2, 0.01, 1) == "contradicted" and verdict(-0.2, 0.01, 1, lower_is_better=True) == "supported"


def test_provenance_header():
    lines = provenance_header(spec(), {"data_source": "synthetic", "epochs": 3})
    text = " ".join(lines)
    assert "NOT the paper's configuration" in text and "synthetic" in text and "epochs 3 (paper: 100)" in text
    assert "stands in for Llama" in text
    real = provenance_header(spec(models=["vit", "llama3.1-8b"], llm_for_paper={}), {"data_source": "msd", "epochs": 100})
    assert "NOT" not in " ".join(real)
    assert "not verified" in " ".join(provenance_header(spec()))


def test_tables_cli_and_metrics_json(tmp_path):
    long = make_long(grid([T1, T3], ["vit", "smollm2-135m"], n_cases=4))
    long.to_csv(tmp_path / "long.csv", index=False)
    config = {"data": {"source": "synthetic"}, "training": {"batch_size": 4, "lr": 3e-3}, "experiments": {"main": MAIN}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    rc = tables_main(["--long", str(tmp_path / "long.csv"), "--config", str(tmp_path / "config.yaml"),
                      "--outdir", str(tmp_path / "tables"), "--metrics-json", str(tmp_path / "metrics.json")])
    assert rc == 0
    names = sorted(p.name for p in (tmp_path / "tables").iterdir())
    assert "main.tex" in names and "main_comparison.md" in names and "main_claims.csv" in names
    md = (tmp_path / "tables" / "main_comparison.md").read_text()
    assert "NOT the paper's configuration" in md and "0.84 ± 0.11" in md
    # provenance from the config file: the data source and the learning rate differ, the batch size does not
    assert "synthetic data (paper: the MSD images)" in md and "learning rate 0.003" in md and "batch size" not in md
    claims_csv = pd.read_csv(tmp_path / "tables" / "main_claims.csv", comment="#")
    assert set(claims_csv["verdict"]) <= {"supported", "contradicted", "inconclusive", "not testable"}
    assert list(claims_csv.columns) == CLAIM_COLUMNS
    assert claims_csv["headline"].iloc[0] and claims_csv["headline"].sum() == 7  # two tasks: per metric, and misses
    claims_md = (tmp_path / "tables" / "main_claims.md").read_text()
    assert METHOD_NOTE in claims_md and "HEADLINE:" in claims_md and "not testable (n = 4)" in claims_md and UNITS_NOTE in claims_md
    comparison = pd.read_csv(tmp_path / "tables" / "main_comparison.csv", comment="#")
    assert {"n", "n_penalised", "n_undefined"} <= set(comparison.columns)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    entry = metrics["main"][T1]["smollm2-135m"]
    assert 0 < entry["dice_mean"] < 1 and entry["n_cases"] == 4 and entry["params_m"] == pytest.approx(4.1)
    nan_long = long.copy()  # HD95 not computed for the ViT
    nan_long.loc[nan_long["model"] == "vit", ["hd95", "hd95_status"]] = [np.nan, "skipped"]
    summary = metrics_summary([score_experiment(nan_long, spec())])
    assert summary["main"][T1]["vit"]["hd95_mean"] is None
    json.dumps(summary, allow_nan=False)


TASKS6 = [T1, "Task02_Heart", T3, "Task04_Hippocampus", "Task05_Prostate", "Task06_Lung"]


def test_one_hypothesis_one_verdict_across_the_paper():
    """Table 2 and Table 4 share "ViT + LLM beats ViT in Dice on Task03": one row content in both,
    adjusted once over the paper (before: Holm per table gave it different verdicts)."""
    tasks = TASKS6
    long = make_long(grid(tasks, ["vit", "smollm2-135m"], n_cases=8, gain=0.03))
    main = score_experiment(long, spec(tasks=tasks))
    llm = score_experiment(long, spec("llm_comparison", tasks=tasks))
    both = paper_claims([main, llm])
    shared = ["effect", "ci_low", "ci_high", "p_value", "p_adjusted", "verdict", "family", "test"]
    m = both["main"].set_index("hypothesis")
    t = both["llm_comparison"].set_index("hypothesis")
    common = t.index.intersection(m.index)
    assert len(common) == len(t) == 1 + len(tasks)  # the Dice headline and every per-task Dice row
    pd.testing.assert_frame_equal(m.loc[common, shared], t.loc[common, shared])
    assert (t.loc[common, "verdict"] == "supported").all()
    assert list(t["family"].value_counts().sort_index().items()) == [("per-task", len(tasks)), ("primary", 1)]


def test_controls_are_judged_against_their_pretrained_block_only():
    models = ["vit", "smollm2-135m", "smollm2-135m-shuffled", "smollm2-135m-random"]
    long = make_long(grid([T1, T3], models, n_cases=8))
    for kind in ("main", "llm_comparison"):
        c = claims(score_experiment(long, spec(kind, models=models)))
        assert not ((c["b"] == "ViT") & c["a"].str.contains("shuffled|random", case=False)).any()
        control = c[c["family"] == "control"]
        assert (control["a"].str.startswith("ViT + SmolLM2-135M") & ~control["a"].str.contains("shuffled|random")).all()
        assert set(control["metric"]) == {"dice"} and (control["claim_source"] == "our control (the paper has none)").all()
        assert len(control) == 2 * 3  # two controls x (two tasks + the cross-task row)


def test_cross_validation_folds_are_replicates_with_the_corrected_t():
    """A long table with a `fold` column: replicates are (seed, fold) pairs, tested with the
    corrected resampled t; without the column the same scores are cases of one split."""
    long = make_long(grid([T1], ["vit", "smollm2-135m"], n_cases=25, gain=0.05))
    long["fold"] = long["case_id"].str[-2:].astype(int) % 5
    c = claims(score_experiment(long, spec(tasks=[T1]))).set_index("metric").loc["dice"]
    assert c["unit"] == "replicates" and c["n"] == 5 and "Nadeau" in c["test"]
    scores = score_experiment(long, spec(tasks=[T1])).scores
    per_fold = (scores[scores["model"] == "smollm2-135m"].groupby("fold")["dice"].mean()
                - scores[scores["model"] == "vit"].groupby("fold")["dice"].mean())
    assert c["effect"] == pytest.approx(per_fold.mean())
    se = np.sqrt((1 / 5 + 1 / 4) * per_fold.var(ddof=1))
    from scipy import stats
    assert c["p_value"] == pytest.approx(2 * stats.t.sf(abs(per_fold.mean()) / se, 4))
    single = claims(score_experiment(long.drop(columns="fold"), spec(tasks=[T1]))).set_index("metric").loc["dice"]
    assert single["unit"] == "cases" and single["n"] == 25
    empty = claims(score_experiment(long.assign(fold=pd.NA), spec(tasks=[T1]))).set_index("metric").loc["dice"]
    assert empty["unit"] == "cases"


def test_summarize_keeps_a_skipped_metric_nan():
    long = make_long({(T1, "vit", "hybrid-sequential", "32x32x16", 0): {"a": 0.5, "b": 0.7}})
    rows = long[long["class_name"] == "mean"].assign(size="32x32x16")
    rows.loc[rows.index[0], ["hd95", "hd95_status"]] = [np.nan, "skipped"]
    out = summarize(rows, ["hd95", "dice"]).iloc[0]
    assert np.isnan(out["hd95_mean"]) and out["hd95_n_undefined"] == 1 and not np.isnan(out["dice_mean"])


def test_a_closed_gate_leaves_later_families_undecided_and_says_why():
    """The primary headline cannot be rejected (mixed tasks): per-task rows with tiny p stay
    inconclusive, and their test text names the gate; the hierarchy is the paper's, not the row's."""
    tasks = TASKS6
    g = grid(tasks, ["vit", "smollm2-135m"], n_cases=12, gain=0.2)
    for t in tasks[3:]:  # three tasks clearly worse: the cross-task headline is undecided
        g[(t, "smollm2-135m", "hybrid-sequential", "32x32x16", 0)] = {
            k: v - 0.4 for k, v in g[(t, "smollm2-135m", "hybrid-sequential", "32x32x16", 0)].items()}
    c = claims(score_experiment(make_long(g), spec("llm_comparison", tasks=tasks)))
    head = c[c["family"] == "primary"].iloc[0]
    assert head["verdict"] == "inconclusive" and head["ci_low"] < 0 < head["ci_high"]
    rows = c[c["family"] == "per-task"]
    assert (rows["p_value"] < 0.001).all() and (rows["verdict"] == "inconclusive").all()
    assert rows["test"].str.contains("serial gate").all()
    assert (rows["p_adjusted"] >= head["p_adjusted"]).all()


def test_adjust_is_holm_within_families_behind_a_serial_gate():
    p = {"primary": {"h1": 0.01, "h2": 0.02}, "per-task": {"t1": 0.001, "t2": 0.3, "t3": float("nan")},
         "secondary-metrics": {"s1": 0.0001}, "control": {"c1": 0.04}}
    adjusted, level, closed = adjust(p)
    assert adjusted["h1"] == pytest.approx(0.02) and adjusted["h2"] == pytest.approx(0.02)
    assert adjusted["t1"] == pytest.approx(0.02) and adjusted["t2"] == pytest.approx(0.3)  # max(own Holm, gate)
    assert np.isnan(adjusted["t3"])  # not testable: outside the family
    assert adjusted["s1"] == pytest.approx(0.3) and closed == {"s1"}  # t2 not rejected: the gate closes
    assert adjusted["c1"] == pytest.approx(0.04)  # controls: their own family, no gate
    assert level["t1"] == pytest.approx(0.05 / 2) and level["t2"] == pytest.approx(0.05)


def test_misses_are_weighed_apart_from_boundary_quality():
    """Metrics Reloaded: an HD95 claim weighs the cases both runs segment; the misses get a row of
    their own. The LLM run misses a class in 3 of 10 cases and otherwise has the better boundary."""
    cases = {f"c{i}": 0.6 for i in range(10)}
    key_llm = (T1, "smollm2-135m", "hybrid-sequential", "32x32x16", 0)
    runs = {(T1, "vit", "hybrid-sequential", "32x32x16", 0): dict(cases),
            key_llm: {c: v + 0.05 + 0.001 * i for i, (c, v) in enumerate(cases.items())}}
    long = make_long(runs, missed={key_llm: {("c0", 1), ("c1", 1), ("c2", 1)}})
    c = claims(score_experiment(long, spec(tasks=[T1]))).set_index("metric")
    hd95, misses = c.loc["hd95"], c.loc["misses"]
    assert hd95["n"] == 7 and hd95["effect"] < 0  # boundary quality on the 7 cases both segment: better
    assert misses["n"] == 10 and misses["effect"] == pytest.approx(0.3) and misses["better"] == "lower is better"
    assert misses["family"] == "secondary-metrics" and misses["reproduced_a"] == pytest.approx(0.3)
    assert "misses" in misses["claim"] and misses["verdict"] == "not testable"  # 3 discordant cases < 6
