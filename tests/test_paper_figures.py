"""Each figure function writes a non-empty PNG and PDF with the expected number of panels; the
figures carry the configuration stamp, one colour per model, fixed radar ranges, dataset.json
class names, a page-sized Appendix Figure 2 and one point per run."""

import glob
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from medvisionllama.paper import figures as F
from medvisionllama.paper.figures import base
from medvisionllama.paper.tables import write_tables
from medvisionllama.paper.aggregate import aggregate
from medvisionllama.paper.compare import comparison_values, configuration_differences
from medvisionllama.paper.published import model_label, model_style
from medvisionllama.paper.outputs import figure_outputs
from medvisionllama.paper.spec import parse_experiments
from medvisionllama.paper.summary import case_scores, score_experiment, summarize
from medvisionllama.vocabulary import PAPER_METRICS as METRICS
from test_paper_fixtures import grid, make_long, make_sample, write_run_dir

T1, T3 = "Task01_BrainTumour", "Task03_Liver"
NAMES = {T1: {0: "background", 1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"},
         T3: {0: "background", 1: "liver", 2: "cancer"}}


def _ok(out, n_panels):
    assert out.n_panels == n_panels
    assert [p.suffix for p in out.paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in out.paths)


def test_training_curves(tmp_path):
    rows = []
    for model in ("vit", "smollm2-135m"):
        for seed in (0, 1):
            for e in range(1, 4):
                rows.append({"task": T1, "model": model, "seed": seed, "epoch": e, "train_dice": 0.1 * e,
                             "val_dice": 0.09 * e, "train_loss": 1 / e, "val_loss": 1.1 / e})
    _ok(F.figure_training_curves(pd.DataFrame(rows), tmp_path / "fig3", [T1], ["vit", "smollm2-135m"]), 2)
    with pytest.raises(Exception, match="no training curve"):
        F.figure_training_curves(pd.DataFrame(rows), tmp_path / "x", [T3], ["vit"])


def test_activation_maps(tmp_path):
    out = F.figure_activation_maps({"vit": make_sample(False), "smollm2-135m": make_sample(True)}, tmp_path / "fig4")
    _ok(out, 1 + 3 * 2)
    assert "ViT + SmolLM2-135M" in out.texts
    assert any("channel mean of |activation|" in t for t in out.texts)  # the statistic is named
    assert any("the axial slice with the most ground-truth foreground" in t for t in out.texts)  # the choice stated


def test_activation_maps_one_scale_per_row_and_ground_truth_everywhere(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setattr(base.plt, "close", lambda fig: None)  # keep the figure to inspect it
    vit, llm = make_sample(False), make_sample(True)
    llm["act_V_E"] = llm["act_V_E"] * 10  # the LLM model's encoder is ten times louder
    F.figure_activation_maps({"vit": vit, "smollm2-135m": llm}, tmp_path / "fig4")
    fig = plt.gcf()
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"][1:]  # below the input
    limits = [ax.images[0].get_clim() for ax in panels]
    assert limits[0] == limits[1] == pytest.approx((0.0, float(llm["act_V_E"].max())))  # 0 to the stage's max
    assert limits[-2] == limits[-1] == pytest.approx((0.0, float(max(vit["act_V_D"].max(), llm["act_V_D"].max()))))
    assert all(ax.collections for ax in panels)  # the ground-truth contour on every panel
    plt.close(fig)


def test_segmentations(tmp_path):
    samples = {(t, m): make_sample(seed=i) for i, (t, m) in enumerate(
        [(t, m) for t in (T1, T3) for m in ("vit", "smollm2-135m", "llama3.1-8b")])}
    out = F.figure_segmentations(samples, [T1, T3], ["vit", "smollm2-135m", "llama3.1-8b"], tmp_path / "fig5", "Fig 5",
                                 NAMES)
    _ok(out, 6)
    assert {"1: edema", "3: enhancing tumour", "1: liver", "2: cancer", "outline: ground truth",
            "fill: prediction"} <= set(out.texts)
    assert not any(t.startswith("class ") for t in out.texts)
    with pytest.raises(Exception, match="dataset.json class names"):
        F.figure_segmentations(samples, [T1, T3], ["vit"], tmp_path / "x", "Fig 5", {T1: NAMES[T1]})


def test_class_names_come_from_dataset_json(tmp_path):
    folder = tmp_path / T3
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "cancer"}}))
    assert F.load_class_names([folder]) == {T3: NAMES[T3]}
    assert F.load_class_names([folder / "dataset.json"]) == {T3: NAMES[T3]}
    (folder / "dataset.json").write_text("{}")
    with pytest.raises(Exception, match="dataset.json 'labels'"):
        F.load_class_names([folder])


def test_appendix_figure2_fits_a_page(tmp_path):
    tasks = [f"Task{i:02d}_Brain" for i in range(1, 11)]
    models = ["vit", "mlp", "smollm2-135m", "smollm2-135m-random"]
    samples = {(t, m): make_sample(seed=i) for i, (t, m) in enumerate((t, m) for t in tasks for m in models)}
    names = {t: NAMES[T1] for t in tasks}
    out = F.figure_segmentations(samples, tasks, models, tmp_path / "app2", "App 2", names,
                                 stamp="NOT the paper's configuration: " + "synthetic data; " * 12)
    width, height = out.size_inches
    assert width <= F.PAGE_INCHES[0] + 0.1 and height <= F.PAGE_INCHES[1] + 0.1, out.size_inches
    assert width > 4 and height > 6  # still a figure, not a thumbnail
    assert out.min_font_pt >= F.MIN_FONT_PT


def test_attention_radar_and_comparison(tmp_path):
    specs = parse_experiments({
        "attention_strategy": {"tasks": [T1, T3], "models": ["smollm2-135m"], "sizes": ["32x32x16"],
                               "attention": ["hybrid-sequential", "hybrid-parallel", "hybrid-interleaved"]},
        "llm_comparison": {"tasks": [T1], "models": ["vit", "smollm2-135m", "llama3.1-8b"], "sizes": ["32x32x16"],
                           "llm_for_paper": {"smollm2-135m": "yi1.5-9b"}}})
    long = make_long(grid([T1, T3], ["vit", "smollm2-135m", "llama3.1-8b"],
                          attention=("hybrid-sequential", "hybrid-parallel", "hybrid-interleaved")))
    scores = case_scores(long, specs[0])
    scores = scores[scores["model"] == "smollm2-135m"]
    params = long[long["model"] == "smollm2-135m"].groupby("attention")[["params_trainable", "params_total"]].first()
    order = list(specs[0].attention)
    out = F.figure_attention_strategies(scores, params.reset_index(), tmp_path / "appfig1", order)
    _ok(out, 3)  # parameters, then one panel per task
    assert "Trainable parameters" in out.texts and any("800.0k" in t for t in out.texts)  # fixture: 0.8e6 trainable
    assert "n=6" in out.texts  # every case a point, n on the axis; no error bars
    with pytest.raises(Exception, match="params_trainable"):
        F.figure_attention_strategies(scores, params.reset_index().drop(columns=["params_trainable"]), tmp_path / "x",
                                      order)
    s = summarize(case_scores(long, specs[1]), list(METRICS))
    _ok(F.figure_radar(s, tmp_path / "appfig3", "radar"), 1)
    values = pd.concat([comparison_values(score_experiment(long, sp)) for sp in specs])
    _ok(F.figure_published_vs_reproduced(values, tmp_path / "new", "NOT the paper's configuration"), 1)


def _radar_summary(rows):
    return pd.DataFrame([{"model": m, **{f"{k}_mean": v for k, v in zip(METRICS, vals)}} for m, vals in rows])


def test_radar_axis_ranges_are_fixed(tmp_path):
    good = ("smollm2-135m", (0.8, 0.99, 0.85, 0.75, 0.7, 12.0))
    fair = ("vit", (0.6, 0.98, 0.7, 0.5, 0.45, 30.0))
    awful = ("mlp", (0.05, 0.9, 0.1, 0.02, 0.03, 400.0))
    two = F.radar_values(_radar_summary([good, fair]))
    three = F.radar_values(_radar_summary([awful, fair, good]))
    pd.testing.assert_frame_equal(two, three.loc[two.index])  # a worse model shown moves no one else
    assert two.loc["vit", "hd95"] == pytest.approx(1 - 30.0 / F.RADAR_HD95_RANGE_MM)
    assert two.loc["vit", "dice"] == pytest.approx(0.6)
    assert three.loc["mlp", "hd95"] == 0.0  # beyond the range: the centre
    assert 0.0 < two["hd95"].min()  # the worst model shown is not pinned to the centre
    out = F.figure_radar(_radar_summary([good, fair]), tmp_path / "radar", "radar")
    assert any(f"{F.RADAR_HD95_RANGE_MM:.0f} mm" in t for t in out.texts)  # the range is stated on the image


def test_one_colour_per_model_across_figures_and_orders(tmp_path):
    rows = [{"task": T1, "model": m, "seed": 0, "epoch": e, "train_dice": 0.1 * e, "val_dice": 0.1 * e,
             "train_loss": 1 / e, "val_loss": 1 / e} for m in ("vit", "smollm2-135m") for e in (1, 2)]
    curves = pd.DataFrame(rows)
    fig3 = F.figure_training_curves(curves, tmp_path / "a", [T1], ["vit", "smollm2-135m"]).legend_colors
    fig3_swapped = F.figure_training_curves(curves, tmp_path / "b", [T1], ["smollm2-135m", "vit"]).legend_colors
    models = ["smollm2-135m-random", "mlp", "vit", "smollm2-135m", "smollm2-135m-shuffled"]
    summary = _radar_summary([(m, (0.5, 0.9, 0.5, 0.5, 0.4, 20.0)) for m in models])
    radar = F.figure_radar(summary, tmp_path / "r", "radar").legend_colors
    radar_swapped = F.figure_radar(summary.iloc[::-1], tmp_path / "r2", "radar").legend_colors
    for m in ("vit", "smollm2-135m"):
        colour = model_style(m)[0]
        assert fig3[model_label(m)] == fig3_swapped[model_label(m)] == radar[model_label(m)] == colour
    assert radar == radar_swapped
    assert len(set(radar.values())) == len(models)  # every model its own colour
    assert len({model_style(m)[1] for m in models}) == len(models)  # and its own marker
    assert model_label("smollm2-135m-random") in radar and "Gaussian control" in model_label("smollm2-135m-random")


def test_published_vs_reproduced_plots_each_run_once(tmp_path):
    specs = parse_experiments({
        "main": {"tasks": [T1, T3], "models": ["vit", "smollm2-135m"], "sizes": ["32x32x16"],
                 "llm_for_paper": {"smollm2-135m": "llama3.1-8b"}},
        "complexity": {"tasks": [T1], "models": ["vit", "smollm2-135m", "mlp"], "sizes": ["32x32x16"],
                       "llm_for_paper": {"smollm2-135m": "llama3.1-8b"}}})
    long = make_long(grid([T1, T3], ["vit", "smollm2-135m", "mlp"]))
    values = pd.concat([comparison_values(score_experiment(long, sp)) for sp in specs])
    dice = values[(values["metric"] == "dice") & values["published_mean"].notna()]
    runs = dice[["task", "model", "attention", "size"]].drop_duplicates()
    assert len(dice) > len(runs)  # the fixture does share runs between tables
    points = F.published_vs_reproduced_points(values)
    assert len(points) == len(runs)
    assert not points.duplicated(["task", "model", "attention", "size"]).any()
    out = F.figure_published_vs_reproduced(values, tmp_path / "pvr")
    assert f"{len(runs)} runs, each once" in out.texts


def test_stamp_only_when_not_the_papers_configuration(tmp_path):
    paper = parse_experiments({"main": {"tasks": [T1], "models": ["vit", "llama3.1-8b"], "sizes": ["32x32x16"]}})
    demo = parse_experiments({"main": {"tasks": [T1], "models": ["vit", "smollm2-135m", "smollm2-135m-random"],
                                       "sizes": ["32x32x16"], "llm_for_paper": {"smollm2-135m": "llama3.1-8b"}}})
    long = make_long(grid([T1], ["vit", "llama3.1-8b", "smollm2-135m", "smollm2-135m-random"]), epochs=100)
    as_paper = {"data_source": "msd", "epochs": 100, "batch_size": 4, "learning_rate": 1e-5}
    assert F.configuration_stamp(paper, {"main": score_experiment(long, paper[0])}, as_paper) is None
    demo_prov = {"data_source": "synthetic", "epochs": None, "batch_size": 4, "learning_rate": 3e-3}
    stamp = F.configuration_stamp(demo, {"main": score_experiment(long, demo[0])}, demo_prov)
    for phrase in configuration_differences(demo[0], {**demo_prov, "epochs": 100}):  # the tables' own phrases
        assert phrase in stamp
    assert "synthetic data" in stamp and "learning rate 0.003" in stamp and "stands in for" in stamp
    assert "smollm2-135m-random" in stamp and "Input size 32x32x16" in stamp
    out = F.figure_radar(_radar_summary([("vit", (0.5, 0.9, 0.5, 0.5, 0.4, 20.0))]), tmp_path / "r", "radar", stamp)
    assert stamp in out.texts
    assert not any(t.startswith("NOT the paper") for t in F.figure_radar(
        _radar_summary([("vit", (0.5, 0.9, 0.5, 0.5, 0.4, 20.0))]), tmp_path / "r2", "radar").texts)


def test_figures_cli(tmp_path, monkeypatch):
    exps = {"main": {"tasks": [T1], "models": ["vit", "smollm2-135m"], "sizes": ["16x16x8"],
                     "llm_for_paper": {"smollm2-135m": "llama3.1-8b"}}}
    config = {"data": {"source": "synthetic"}, "training": {"lr": 0.003, "batch_size": 4}, "experiments": exps}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    for key, cases in grid([T1], ["vit", "smollm2-135m"], sizes=("16x16x8",), n_cases=3).items():
        write_run_dir(tmp_path / "runs", *key, cases)
    (tmp_path / "data" / T1).mkdir(parents=True)
    (tmp_path / "data" / T1 / "dataset.json").write_text(json.dumps({"labels": {str(k): v for k, v in NAMES[T1].items()}}))
    aggregate([tmp_path / "runs"], tmp_path / "long.csv", tmp_path / "curves.csv")
    samples = glob.glob(str(tmp_path / "runs" / "**" / "samples.npz"), recursive=True)
    tables = write_tables(tmp_path / "long.csv", tmp_path / "config.yaml", tmp_path / "tables")
    claims = [str(p) for p in tables if p.name.endswith("_claims.csv")]
    drawn, outputs = {}, {}
    save = base.save

    def spy(fig, stem, n_panels, stamp=None, **kwargs):
        out = save(fig, stem, n_panels, stamp, **kwargs)
        drawn[out.paths[0].name] = out.texts
        outputs[out.paths[0].name] = out
        return out

    monkeypatch.setattr(base, "save", spy)
    args = ["--long", str(tmp_path / "long.csv"), "--config", str(tmp_path / "config.yaml"), "--outdir",
            str(tmp_path / "figs"), "--curves", str(tmp_path / "curves.csv"), "--claims", *claims, "--samples", *samples]
    rc = F.main([*args, "--datasets", str(tmp_path / "data" / T1)])
    assert rc == 0
    expected = figure_outputs(parse_experiments(exps))
    assert {"main_forest.png", "main_cases.png", "main_curves.png", "appfig3_metrics.png"} <= set(expected)
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(expected)
    assert sorted(drawn) == sorted(n for n in expected if n.endswith(".png"))
    for name, texts in drawn.items():  # every figure says, on the image, that it is not the paper's setup
        stamp = next(t for t in texts if t.startswith("NOT the paper's configuration") and "\n" not in t)
        assert "synthetic data" in stamp and "learning rate 0.003" in stamp and "epochs 4" in stamp, name
    for name, out in outputs.items():  # readable at the size made for: 7 pt fonts, no wider than the page
        assert out.min_font_pt >= F.MIN_FONT_PT, (name, out.min_font_pt)
        assert out.size_inches[0] <= F.PAGE_INCHES[0] + 0.15, (name, out.size_inches)
    assert "1: edema" in drawn["fig5_segmentations.png"]
    with pytest.raises(Exception, match="dataset.json class names"):
        F.main([*args, "--outdir", str(tmp_path / "figs2")])
    with pytest.raises(Exception, match="needs --claims main_claims.csv"):
        F.main([a for a in args if a not in claims] + ["--datasets", str(tmp_path / "data" / T1),
                                                       "--outdir", str(tmp_path / "figs3")])


def _case_sample(cases: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    """A samples.npz with per-case slices whose Dice are ``cases`` (case id -> Dice)."""
    rng = np.random.default_rng(seed)
    out = dict(make_sample(seed=seed))
    for i, (case, dice) in enumerate(cases.items()):
        label = np.zeros((12, 12), np.uint8)
        label[3:8, 3:8] = 1
        out.update({f"case{i}_image": rng.normal(size=(1, 12, 12)).astype(np.float32), f"case{i}_label": label,
                    f"case{i}_pred": label.copy(), f"case{i}_id": np.array(case), f"case{i}_dice": np.float32(dice),
                    f"case{i}_slice": np.int64(i)})
    return out


def test_best_median_worst_are_the_planted_cases():
    from medvisionllama.paper.figures.segmentation import best_median_worst, case_samples, ranked_cases

    # two models; mean Dice per case: a 0.5, b 0.9, c 0.1, d 0.7, e nan (no model scored it)
    vit = case_samples(_case_sample({"a": 0.4, "b": 0.8, "c": 0.2, "d": 0.7, "e": np.nan}))
    llm = case_samples(_case_sample({"a": 0.6, "b": 1.0, "c": 0.0, "d": 0.7, "e": np.nan}))
    ranked = ranked_cases({"vit": vit, "llm": llm})
    assert [c for c, _ in ranked] == ["b", "d", "a", "c", "e"]  # best first; a case without a score last
    assert ranked[0][1] == pytest.approx(0.9)
    assert best_median_worst(ranked[:4]) == [("best", "b"), ("median", "d"), ("worst", "c")]  # even n: better middle
    assert best_median_worst(ranked[:3]) == [("best", "b"), ("median", "d"), ("worst", "a")]
    assert best_median_worst(ranked[:2]) == [("best", "b"), ("worst", "d")]  # two cases: no third
    assert best_median_worst(ranked[:1]) == [("best", "b")]
    # only cases every model has are ranked
    assert [c for c, _ in ranked_cases({"vit": vit, "x": case_samples(_case_sample({"a": 0.1, "c": 0.9}))})] == ["c", "a"]


def test_case_samples_of_folds_and_of_files_before_per_case_slices():
    from medvisionllama.paper.figures.segmentation import case_samples

    folds = [_case_sample({"a": 0.1, "b": 0.2}), _case_sample({"c": 0.3}, seed=1)]  # each fold: its test cases
    merged = case_samples(folds)
    assert sorted(merged) == ["a", "b", "c"] and float(merged["c"]["dice"]) == pytest.approx(0.3)
    old = make_sample(seed=3)  # a shared samples.npz of an earlier version: the first case only
    assert list(case_samples(old)) == [str(old["case_id"])]


def test_figure5_rows_are_each_tasks_best_median_and_worst_case(tmp_path):
    from medvisionllama.paper.figures.cli import _chosen_cases

    cases = {"a": 0.5, "b": 0.9, "c": 0.1}
    pick = {(T1, m): [_case_sample(cases, seed=i)] for i, m in enumerate(["vit", "smollm2-135m"])}
    samples, rows, row_tasks, labels = _chosen_cases(pick, [T1], ["vit", "smollm2-135m"], median_only=False)
    assert [str(samples[(r, "vit")]["case_id"]) for r in rows] == ["b", "a", "c"]
    assert [labels[r].split("\n")[1] for r in rows] == ["best of 3", "median of 3", "worst of 3"]
    out = F.figure_segmentations(samples, rows, ["vit", "smollm2-135m"], tmp_path / "fig5", "Fig 5", NAMES,
                                 row_tasks=row_tasks, row_labels=labels, note="Rows: best, median, worst.")
    assert out.n_panels == 6 and "best of 3" in " ".join(out.texts) and "case b, slice 1" in out.texts
    samples, rows, _, labels = _chosen_cases(pick, [T1], ["vit", "smollm2-135m"], median_only=True)
    assert [str(samples[(r, "vit")]["case_id"]) for r in rows] == ["a"] and labels[rows[0]].endswith("median of 3")
