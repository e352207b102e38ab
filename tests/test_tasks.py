"""Any task folder with a dataset.json; a folder named like an MSD task must hold that task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, tiny_config

from medvisionllama.errors import InputError
from medvisionllama.experiments import experiment_specs
from medvisionllama.paper.published import load_published
from medvisionllama.tasks import TASKS, check_task_folders, get_task, msd_mismatch, task_info

KIDNEY = {"name": "Kidney", "description": "my kidneys", "modality": {"0": "CT"},
          "labels": {"0": "background", "1": "kidney", "2": "cyst"}, "numTraining": 3, "training": []}


def task_folder(root: Path, name: str, dataset: dict) -> Path:
    folder = root / name
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    (folder / "dataset.json").write_text(json.dumps(dataset))
    return folder


def test_any_folder_is_a_task_read_from_its_dataset_json(tmp_path):
    assert task_info("Task05").name == "Task05_Prostate" and task_info("Task05").msd
    task_folder(tmp_path, "MyKidneys", KIDNEY)
    info = task_info("MyKidneys", tmp_path)
    assert not info.msd and info.num_classes == 3 and info.num_channels == 1 and info.kind == "CT" and info.cases == 3
    nominal = task_info("NotThereYet", tmp_path)  # folder not made yet: the name is enough
    assert not nominal.msd and nominal.name == "NotThereYet"
    with pytest.raises(InputError, match="a task is a folder name"):
        task_info("../elsewhere")
    with pytest.raises(InputError, match="only these can be synthesised or downloaded"):
        get_task("MyKidneys")
    assert "MyKidneys" not in set(load_published()["task"])  # no published number for a user's task


def test_an_msd_name_on_other_data_is_refused_with_the_reason(tmp_path):
    folder = task_folder(tmp_path, "Task05_Prostate", KIDNEY)  # kidney data posing as Prostate
    reason = msd_mismatch(folder)
    assert reason and "\n" not in reason
    assert "labels" in reason and "modality" in reason and "rename the folder" in reason
    with pytest.raises(InputError, match="Task05_Prostate's"):
        check_task_folders(tmp_path, ["Task05_Prostate"])
    config = tiny_config()
    config["data"].update(dir=str(tmp_path), tasks=["Task05_Prostate"])
    config["experiments"] = {"main": {"tasks": "all", "models": ["vit", "mlp"]}}
    with pytest.raises(InputError, match="Refused: the paper's Task05_Prostate numbers"):
        experiment_specs(config)
    # the same data under its own name runs, and so does the real task (names compared case-insensitively)
    (tmp_path / "Task05_Prostate").rename(tmp_path / "Kidney")
    config["data"]["tasks"] = ["Kidney"]
    assert [s.tasks for s in experiment_specs(config)] == [("Kidney",)]
    real = dict(KIDNEY, modality={"0": "t2", "1": "adc"}, labels={"0": "Background", "1": "pz", "2": "tz"})
    assert msd_mismatch(task_folder(tmp_path, "Task05_Prostate", real)) is None
    assert msd_mismatch(tmp_path / "Task09_Spleen") is None  # not there yet: a download brings the real one


def test_schema_takes_any_task_folder_name():
    from snakemake.utils import validate

    schema = str(ROOT / "workflow/schemas/config.schema.yaml")
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["data"]["tasks"] = ["Kidney_v2", *list(TASKS)[:1]]
    validate(config, schema)
    config["data"]["tasks"] = ["a/b"]
    with pytest.raises(Exception, match="does not match"):
        validate(config, schema)


# ------------------------------------------------------------------ the custom experiment kind
def test_custom_experiment_tables_and_claims_without_published_columns(tmp_path):
    import pandas as pd
    from test_paper_fixtures import grid, make_long

    from medvisionllama.paper.compare import comparison_values
    from medvisionllama.paper.outputs import figure_outputs
    from medvisionllama.paper.spec import parse_experiments
    from medvisionllama.paper.summary import score_experiment
    from medvisionllama.paper.tables import main as tables_main

    t1 = "Task01_BrainTumour"
    long = make_long(grid(["Kidney", t1], ["vit", "mlp", "smollm2-135m"], n_cases=8, gain=0.15))
    long.to_csv(tmp_path / "long.csv", index=False)
    experiments = {"mine": {"kind": "custom", "tasks": ["Kidney", t1], "models": ["vit", "mlp", "smollm2-135m"],
                            "sizes": ["32x32x16"]},
                   "main": {"tasks": ["Kidney", t1], "models": ["vit", "smollm2-135m"], "sizes": ["32x32x16"]}}
    config = {"data": {"source": "synthetic", "tasks": ["Kidney", t1]}, "experiments": experiments}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert tables_main(["--long", str(tmp_path / "long.csv"), "--config", str(tmp_path / "config.yaml"),
                        "--outdir", str(tmp_path / "tables")]) == 0
    names = {p.name for p in (tmp_path / "tables").iterdir()}
    assert {"mine.md", "mine_claims.csv"} <= names and not any(n.startswith("mine_comparison") for n in names)
    table = pd.read_csv(tmp_path / "tables" / "mine.csv", comment="#", index_col=0)
    assert {"Kidney Dice", "Kidney HD95", "Task01 Dice"} <= set(table.index)  # a user's task by its folder name
    claims = pd.read_csv(tmp_path / "tables" / "mine_claims.csv", comment="#")
    assert set(claims["b"]) == {"ViT"} and claims["published_a"].isna().all()  # no published column filled
    kidney = claims[(claims["task"] == "Kidney") & (claims["metric"] == "dice")]
    assert len(kidney) == 2 and set(kidney["verdict"]) == {"supported"}  # the planted gain of +0.15, found
    assert claims["headline"].any()  # two tasks: the cross-task rows
    from medvisionllama.paper.compare import CUSTOM_SOURCE, paper_claims

    assert set(claims.loc[claims["family"] != "control", "claim_source"]) == {CUSTOM_SOURCE}
    header = (tmp_path / "tables" / "mine_claims.md").read_text()
    assert "Custom experiment 'mine'" in header and "Published numbers" not in header
    # the user's study is adjusted apart: adding it changes none of the paper's verdicts or p-values
    mine, main_spec = parse_experiments(experiments)
    alone = paper_claims([score_experiment(long, main_spec)])["main"]
    together = paper_claims([score_experiment(long, main_spec), score_experiment(long, mine)])["main"]
    pd.testing.assert_frame_equal(alone, together)
    # a paper experiment over a user's task: the paper has no number for it, the MSD task keeps its own
    main = parse_experiments(experiments)[1]
    values = comparison_values(score_experiment(long, main)).set_index(["task", "model", "metric"])
    assert values.loc[("Kidney", "smollm2-135m", "dice"), "published_mean"] != values.loc[
        ("Kidney", "smollm2-135m", "dice"), "published_mean"]  # NaN
    assert values.loc[(t1, "vit", "dice"), "published_mean"] > 0
    # figures: the published-vs-reproduced figure is drawn only when something published exists
    custom_only = parse_experiments({"mine": experiments["mine"]})
    assert "published_vs_reproduced.png" not in figure_outputs(custom_only)
    assert "published_vs_reproduced.png" in figure_outputs(parse_experiments(experiments))
