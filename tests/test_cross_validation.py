"""k-fold cross-validation as a setting: the runs it plans, their paths, and the tables pooling the
out-of-fold cases (fold assignment itself: tests/test_split.py)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, env_with_venv
from snakemake.utils import validate
from test_paper_fixtures import metrics_rows

from medvisionllama.errors import InputError
from medvisionllama.experiments import all_runs, experiment_specs
from medvisionllama.paper.aggregate import aggregate, read_long
from medvisionllama.paper.summary import score_experiment
from medvisionllama.vocabulary import RunKey

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
MAIN = ("hybrid-sequential", "32x32x16")


def merged(base: dict, overlay: dict) -> dict:
    """Snakemake's layering of --configfile files: dicts merge key by key."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def snakemake_dry_run(*configfiles: str) -> str:
    result = subprocess.run(["snakemake", "-n", "-p", "--configfile", *configfiles], cwd=ROOT, env=env_with_venv(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def job_counts(out: str) -> dict[str, int]:
    table = re.search(r"Job stats:\n(.*?)\n\n", out, re.S)
    assert table, out[-2000:]
    return {line.split()[0]: int(line.split()[1]) for line in table.group(1).splitlines()[2:]}


def test_folds_multiply_runs_and_the_default_keeps_its_run_paths():
    config = load(ROOT / "config.yaml")
    validate(config, str(SCHEMA))
    assert "folds" not in config["split"]  # no default: params.yaml and the single split's runs unchanged
    single = all_runs(config)
    assert all(run.fold is None and run.path().endswith("/seed0") for run in single)
    config["split"]["folds"] = 5
    folded = all_runs(config)
    assert len(folded) == 5 * len(single)
    assert {run._replace(fold=None) for run in folded} == set(single)
    assert {run.fold for run in folded} == set(range(5))
    assert all(re.search(r"/seed0-fold[0-4]$", run.path()) for run in folded)
    assert {spec.folds for spec in experiment_specs(config)} == {5}


def test_dry_run_of_the_cv_demo_plans_five_fold_runs_with_their_fold():
    config = merged(load(ROOT / "config.yaml"), load(ROOT / "configs" / "cv-demo.yaml"))
    validate(config, str(SCHEMA))
    out = snakemake_dry_run("configs/cv-demo.yaml")
    counts = job_counts(out)
    assert counts["train_run"] == counts["evaluate_run"] == 10 * 2 * 5 == len(all_runs(config))
    assert counts["split_task"] == 10 and "record_lineage" not in counts
    trains = [line for line in out.splitlines() if "mvl train" in line]
    for line in trains:  # the fold in the run folder is the fold the command trains on
        fold = re.search(r"/seed0-fold(\d)\b", line).group(1)
        assert f"--fold {fold}" in line and "--seed 0" in line
    assert sum("Task02_Heart/vit/" in line for line in trains) == 5
    evaluations = [line for line in out.splitlines() if "mvl evaluate" in line]
    assert all(re.search(r"seed0-fold(\d)\b.*--fold \1\b", line) for line in evaluations)
    splits = [line for line in out.splitlines() if "mvl split" in line]
    assert len(splits) == 10 and all("--folds 5" in line for line in splits)


def test_dry_run_of_the_paper_cv_config_runs_the_paper_grid_five_times():
    paper = merged(load(ROOT / "config.yaml"), load(ROOT / "configs" / "paper.yaml"))
    cv = merged(paper, load(ROOT / "configs" / "paper-cv.yaml"))
    validate(cv, str(SCHEMA))
    assert "folds" not in load(ROOT / "configs" / "paper.yaml").get("split", {})  # the paper's single split stays
    counts = job_counts(snakemake_dry_run("configs/paper.yaml", "configs/paper-cv.yaml"))
    assert counts["train_run"] == 5 * len(all_runs(paper)) == len(all_runs(cv))


def write_fold_run(root: Path, task: str, model: str, fold: int | None, dice: dict[str, float], seed: int = 0) -> Path:
    """A run folder as the pipeline writes it, at ``.../seed{seed}-fold{fold}``."""
    run = root / RunKey(task, model, *MAIN, seed, fold).path()
    run.mkdir(parents=True)
    metrics_rows(task, model, *MAIN, seed, dice).to_csv(run / "metrics.csv", index=False)
    (run / "run.json").write_text(json.dumps({"params": {"total": 1e6, "trainable": 8e5}, "train_seconds": 3.0,
                                              "seed": seed, "device": "cpu"}))
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "train_dice": [0.4, 0.5], "val_loss": [1.0, 0.6],
                  "val_dice": [0.3, 0.4], "seconds": [1.0, 1.0]}).to_csv(run / "history.csv", index=False)
    return run


def test_out_of_fold_cases_pool_per_group_so_every_case_is_tested_once(tmp_path):
    """20 cases in 5 folds of 4: the cell is the mean over all 20 out-of-fold cases (planted values),
    long.csv carries each run's fold, and a case tested by two folds is refused."""
    cases = [f"heart_{i:02d}" for i in range(20)]
    rng = np.random.default_rng(0)
    truth = {m: {c: float(0.5 + 0.3 * rng.random()) + (0.05 if m != "vit" else 0.0) for c in cases}
             for m in ("vit", "smollm2-135m")}
    for model in truth:
        for k in range(5):
            write_fold_run(tmp_path / "runs", "Task02_Heart", model, k, {c: truth[model][c] for c in cases[k::5]})
    long = aggregate([tmp_path / "runs"], tmp_path / "long.csv")
    back = read_long(tmp_path / "long.csv")
    assert str(back["fold"].dtype) == "Int64" and sorted(back["fold"].unique()) == list(range(5))
    assert set(long.loc[long["fold"] == 3, "run"]) == {f"Task02_Heart/{m}/{MAIN[0]}/{MAIN[1]}/seed0-fold3" for m in truth}
    config = load(ROOT / "config.yaml")
    config["data"]["tasks"] = ["Task02_Heart"]
    config["split"]["folds"] = 5
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "smollm2-135m"]}}
    spec = experiment_specs(config)[0]
    scored = score_experiment(back, spec)
    for model in truth:
        cell = scored.cell("Task02_Heart", model, *MAIN)
        assert int(cell["n_cases"]) == 20 and int(cell["n_seeds"]) == 1
        assert cell["dice_mean"] == pytest.approx(np.mean(list(truth[model].values())), abs=1e-5)
    assert sorted(scored.scores["case_id"].unique()) == cases
    # a fold run that is missing is named
    missing = back[back["run"] != f"Task02_Heart/vit/{MAIN[0]}/{MAIN[1]}/seed0-fold4"]
    with pytest.raises(InputError, match="seed0-fold4"):
        score_experiment(missing, spec)
    # a sixth fold folder from another split re-tests a case: refused, never counted twice
    write_fold_run(tmp_path / "runs", "Task02_Heart", "vit", 5, {cases[0]: 0.9})
    with pytest.raises(InputError, match=f"case {cases[0]} is a test case of several folds"):
        aggregate([tmp_path / "runs"], tmp_path / "long2.csv")


def test_single_split_runs_get_an_empty_fold_and_an_old_long_table_still_reads(tmp_path):
    write_fold_run(tmp_path / "runs", "Task02_Heart", "vit", None, {"a": 0.5, "b": 0.7})
    long = aggregate([tmp_path / "runs"], tmp_path / "long.csv")
    assert long["fold"].isna().all() and set(long["run"]) == {f"Task02_Heart/vit/{MAIN[0]}/{MAIN[1]}/seed0"}
    old = pd.read_csv(tmp_path / "long.csv").drop(columns="fold")  # a long table from before the fold column
    old.to_csv(tmp_path / "old.csv", index=False)
    assert read_long(tmp_path / "old.csv")["fold"].isna().all()


def test_a_cross_validation_config_with_dvc_lineage_plans_the_lineage_job(tmp_path):
    """dvc.yaml's split stage passes split.folds (tests/test_lineage.py records such a split)."""
    overlay = tmp_path / "cv.yaml"
    overlay.write_text(yaml.safe_dump({"split": {"folds": 5}, "results_dir": str(ROOT / "results" / tmp_path.name)}))
    result = subprocess.run(["snakemake", "-n", "-p", "--configfile", str(overlay)], cwd=ROOT, env=env_with_venv(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "record_lineage" in result.stdout and "--folds 5" in result.stdout


@pytest.mark.usefixtures("one_torch_thread")
def test_a_fold_run_trains_on_its_fold_and_evaluation_refuses_another_folds_test_cases(tmp_path):
    """Train on fold 1 of 3 (tiny, 1 epoch): it is scored on fold 1's test cases only; scoring it on
    fold 0 or on the single split (whose test cases it may have trained on) is refused."""
    from data_helpers import make_task, tiny_settings

    from medvisionllama.data.preprocess import preprocess_task
    from medvisionllama.data.split import read_split, split_task
    from medvisionllama.evaluation.evaluate import evaluate_run
    from medvisionllama.training.train import train_run

    task = make_task(tmp_path, "Task02_Heart", cases=9, max_dim=12)
    split = tmp_path / "split.json"
    split_task(task, split, seed=0, folds=3)
    pre = tmp_path / "pre"
    preprocess_task(task, "8x8x8", pre)
    run = tmp_path / "runs" / "Task02_Heart" / "vit" / "hybrid-sequential" / "8x8x8" / "seed0-fold1"
    summary = train_run(preprocessed=pre, split=split, run_dir=run, model="vit", seed=0, fold=1,
                        settings=tiny_settings(epochs=1), progress=False)
    assert summary["training"]["fold"] == 1
    fold1 = read_split(split, 1)
    table = evaluate_run(run_dir=run, preprocessed=pre, split=split, data_dir=task, fold=1, device="cpu", progress=False)
    assert sorted(table["case_id"].unique()) == fold1["test"]
    assert json.loads((run / "summary.json").read_text())["run"]["fold"] == 1
    for other, said in ((0, "trained on fold 1, but fold 0"), (None, "trained on fold 1, but the single split")):
        with pytest.raises(InputError, match=said):
            evaluate_run(run_dir=run, preprocessed=pre, split=split, data_dir=task, fold=other, device="cpu",
                         progress=False)
    long = aggregate([tmp_path / "runs"], tmp_path / "long.csv")
    assert set(long["fold"]) == {1} and set(long["run"]) == {"Task02_Heart/vit/hybrid-sequential/8x8x8/seed0-fold1"}


@pytest.mark.slow
def test_real_dag_of_a_cross_validated_layer_sweep(project):
    """The real DAG on one tiny task: 3 folds x (ViT + the Gaussian control at two layers): every
    case tested once per model, the tables pool them, the layer table names each layer, and the
    split exports to nnU-Net's splits_final.json."""
    from conftest import tiny_config

    config = tiny_config()
    config["data"]["tasks"] = ["Task02_Heart"]
    config["data"]["synthetic"].update(cases=9, max_dim=16)
    config["preprocess"]["sizes"] = ["16x16x8"]
    config["training"]["epochs"] = 1
    config["split"]["folds"] = 3
    config["lineage"]["dvc"] = False
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "smollm2-135m-random"], "llm_layers": [0, -1]}}
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(["snakemake", "--cores", "2"], cwd=project, env=env_with_venv(), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = project / "results"
    runs = sorted(p.relative_to(results / "runs").as_posix() for p in (results / "runs").glob("*/*/*/*/*"))
    assert len(runs) == 3 * 3 and all(re.search(r"/seed0-fold[0-2]$", r) for r in runs)
    assert {r.split("/")[1] for r in runs} == {"vit", "smollm2-135m-random@0", "smollm2-135m-random"}
    long = read_long(results / "long.csv")
    cases = long[long["class_name"] == "mean"]
    for model, part in cases.groupby("model"):
        assert sorted(part["case_id"]) == sorted(set(part["case_id"])) and len(part) == 9  # each case once
        assert sorted(part["fold"].unique()) == [0, 1, 2]
    comparison = pd.read_csv(results / "tables" / "main_comparison.csv", comment="#")
    assert set(comparison["n"].astype(int)) == {9}
    layers = (results / "tables" / "main_layers.md").read_text()
    assert "layer 0 of 30" in layers and "layer 29 of 30" in layers
    assert (results / "figures" / "layer_sweep.png").stat().st_size > 0
    subprocess.run(["mvl", "split", "--from", str(results / "splits" / "Task02_Heart.json"), "--nnunet",
                    str(project / "splits_final.json")], cwd=project, env=env_with_venv(), check=True)
    exported = json.loads((project / "splits_final.json").read_text())
    assert sorted(c for entry in exported for c in entry["val"]) == sorted(set(cases["case_id"]))
