"""Each figure function writes a non-empty PNG and PDF with the expected number of panels."""

import glob

import pandas as pd
import pytest
import yaml

from medvisionllama.paper import figures as F
from medvisionllama.paper.aggregate import aggregate
from medvisionllama.paper.compare import comparison_values
from medvisionllama.paper.outputs import figure_outputs
from medvisionllama.paper.spec import parse_experiments
from medvisionllama.paper.summary import case_scores, score_experiment, summarize
from medvisionllama.vocabulary import PAPER_METRICS as METRICS
from test_paper_fixtures import grid, make_long, make_sample, write_run_dir

T1, T3 = "Task01_BrainTumour", "Task03_Liver"


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
    out = F.figure_activation_maps({"ViT": make_sample(False), "ViT + LLM": make_sample(True)}, tmp_path / "fig4")
    _ok(out, 1 + 3 * 2)


def test_segmentations(tmp_path):
    samples = {(t, m): make_sample(seed=i) for i, (t, m) in enumerate(
        [(t, m) for t in (T1, T3) for m in ("vit", "smollm2-135m", "llama3.1-8b")])}
    _ok(F.figure_segmentations(samples, [T1, T3], ["vit", "smollm2-135m", "llama3.1-8b"], tmp_path / "fig5", "Fig 5"), 6)


def test_attention_radar_and_comparison(tmp_path):
    specs = parse_experiments({
        "attention_strategy": {"tasks": [T1, T3], "models": ["smollm2-135m"], "sizes": ["32x32x16"],
                               "attention": ["hybrid-sequential", "hybrid-parallel", "hybrid-interleaved"]},
        "llm_comparison": {"tasks": [T1], "models": ["vit", "smollm2-135m", "llama3.1-8b"], "sizes": ["32x32x16"],
                           "llm_for_paper": {"smollm2-135m": "yi1.5-9b"}}})
    long = make_long(grid([T1, T3], ["vit", "smollm2-135m", "llama3.1-8b"],
                          attention=("hybrid-sequential", "hybrid-parallel", "hybrid-interleaved")))
    s = summarize(case_scores(long, specs[0]), ["dice"])
    _ok(F.figure_attention_strategies(s, tmp_path / "appfig1", list(specs[0].attention)), 2)
    s = summarize(case_scores(long, specs[1]), list(METRICS))
    _ok(F.figure_radar(s, tmp_path / "appfig3", "radar"), 1)
    values = pd.concat([comparison_values(score_experiment(long, sp)) for sp in specs])
    _ok(F.figure_published_vs_reproduced(values, tmp_path / "new", "NOT the paper's configuration"), 1)


def test_figures_cli(tmp_path):
    exps = {"main": {"tasks": [T1], "models": ["vit", "smollm2-135m"], "sizes": ["16x16x8"],
                     "llm_for_paper": {"smollm2-135m": "llama3.1-8b"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"source": "synthetic"}, "experiments": exps}))
    for key, cases in grid([T1], ["vit", "smollm2-135m"], sizes=("16x16x8",), n_cases=3).items():
        write_run_dir(tmp_path / "runs", *key, cases)
    aggregate([tmp_path / "runs"], tmp_path / "long.csv", tmp_path / "curves.csv")
    samples = glob.glob(str(tmp_path / "runs" / "**" / "samples.npz"), recursive=True)
    rc = F.main(["--long", str(tmp_path / "long.csv"), "--config", str(tmp_path / "config.yaml"), "--outdir",
                 str(tmp_path / "figs"), "--curves", str(tmp_path / "curves.csv"), "--samples", *samples])
    assert rc == 0
    expected = figure_outputs(parse_experiments(exps))
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(expected)
