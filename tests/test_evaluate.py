"""Evaluation: metrics.csv on the original grid, predictions, samples.npz, sliding windows."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medvisionllama.evaluation.evaluate import METRICS_COLUMNS, evaluate_run
from medvisionllama.training.train import train_run

from data_helpers import tiny_settings


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _task(root: Path, task: str, size: str, cases: int = 8) -> dict[str, Path]:
    from medvisionllama.data.preprocess import preprocess_task
    from medvisionllama.data.synthesize import synthesize_task

    data = synthesize_task(task, root / "data" / task, cases=cases, seed=0, max_dim=16)
    ids = sorted(p.name[: -len(".nii.gz")] for p in (data / "labelsTr").glob("*.nii.gz"))
    split = root / "splits" / f"{task}.json"
    split.parent.mkdir(parents=True, exist_ok=True)  # two test cases: both predictions kept
    split.write_text(json.dumps({"task": task, "seed": 0, "train": ids[:4], "val": ids[4:6], "test": ids[6:8]}))
    pre = root / "preprocessed" / task / size
    preprocess_task(data, size, pre)
    return {"data": data, "split": split, "preprocessed": pre}


@pytest.fixture(scope="module")
def prostate_run(tmp_path_factory):
    """Task05 (2 channels, 3 classes, anisotropic) with a random-weight LLM block: 2 epochs."""
    root = tmp_path_factory.mktemp("eval")
    t = _task(root, "Task05_Prostate", "16x16x8")
    run = root / "run"
    torch.set_num_threads(1)
    train_run(preprocessed=t["preprocessed"], split=t["split"], run_dir=run, model="smollm2-135m-random", seed=3,
              settings=tiny_settings(), progress=False)
    return {**t, "run": run}


def test_metrics_csv_predictions_and_samples(prostate_run):
    t, run = prostate_run, prostate_run["run"]
    table = evaluate_run(run_dir=run, preprocessed=t["preprocessed"], split=t["split"], data_dir=t["data"],
                         device="cpu", progress=False)
    written = pd.read_csv(run / "metrics.csv")
    assert tuple(written.columns) == METRICS_COLUMNS
    assert len(written) == 2 * 2  # two test cases x two foreground classes
    assert set(written["class_name"]) == {"PZ", "TZ"} and set(written["class_index"]) == {1, 2}
    row = written.iloc[0]
    assert (row["task"], row["model"], row["attention"], row["size"], row["seed"]) == (
        "Task05_Prostate", "smollm2-135m-random", "hybrid-sequential", "16x16x8", 3)
    for name in ("dice", "jaccard", "precision", "recall", "accuracy"):
        values = written[name].dropna()
        assert ((values >= 0) & (values <= 1)).all(), name
    assert (written["hd95"].dropna() >= 0).all()
    np.testing.assert_allclose(written["dice"].to_numpy(), table["dice"].to_numpy(), rtol=1e-5, equal_nan=True)

    # statuses beside the values, consistent with the masks the prediction files hold
    for name in ("dice", "jaccard", "precision", "recall", "accuracy", "hd95"):
        assert set(written[f"{name}_status"]) <= {"defined", "penalised", "empty"}, name
    assert written["hd95"].notna().all()  # no NaN: a miss has the worst value

    # predictions: every test case, on the original grid with the original affine
    test_ids = json.loads(t["split"].read_text())["test"]
    files = sorted((run / "predictions").iterdir())
    assert [f.name for f in files] == sorted(f"{c}.nii.gz" for c in test_ids)
    for case_id in test_ids:
        pred = nib.load(run / "predictions" / f"{case_id}.nii.gz")
        original = nib.load(t["data"] / "labelsTr" / f"{case_id}.nii.gz")
        assert pred.shape == original.shape
        np.testing.assert_allclose(pred.affine, original.affine, atol=1e-5)
        values = np.asarray(pred.dataobj)
        assert set(np.unique(values)) <= {0, 1, 2}
        gt = np.asarray(original.dataobj)
        for _, row in written[written["case_id"] == case_id].iterrows():
            has_pred, has_gt = bool((values == row["class_index"]).any()), bool((gt == row["class_index"]).any())
            expected = "defined" if has_pred and has_gt else "penalised" if has_pred != has_gt else "empty"
            assert row["dice_status"] == row["hd95_status"] == expected
            if expected == "penalised":
                assert row["dice"] == 0 and row["hd95"] > 0

    # summary.json: the same numbers, nnU-Net's names and file references, the run key, version, seed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run"] == {"task": "Task05_Prostate", "model": "smollm2-135m-random",
                              "attention": "hybrid-sequential", "size": "16x16x8", "seed": 3}
    assert summary["seed"] == 3 and summary["version"] and summary["num_cases"] == 2
    assert summary["classes"] == {"1": "PZ", "2": "TZ"}
    assert [c["case_id"] for c in summary["metric_per_case"]] == test_ids
    for entry in summary["metric_per_case"]:
        case_id = entry["case_id"]
        assert entry["prediction_file"] == str((run / "predictions" / f"{case_id}.nii.gz").resolve())
        reference = nib.load(entry["reference_file"])  # the ORIGINAL label file, readable
        gt = np.asarray(reference.dataobj)
        pred = np.asarray(nib.load(entry["prediction_file"]).dataobj)
        for cls, values in entry["metrics"].items():
            row = written[(written["case_id"] == case_id) & (written["class_index"] == int(cls))].iloc[0]
            p, g = pred == int(cls), gt == int(cls)
            assert (values["TP"], values["FP"], values["FN"]) == ((p & g).sum(), (p & ~g).sum(), (~p & g).sum())
            assert (values["n_pred"], values["n_ref"], values["TN"]) == (p.sum(), g.sum(), (~p & ~g).sum())
            assert values["dice"] == pytest.approx(row["dice"], rel=1e-5)
            if values["TP"] + values["FP"] + values["FN"]:  # nnU-Net's Dice: ours where defined
                assert values["Dice"] == pytest.approx(row["dice"], rel=1e-5)
                assert values["IoU"] == pytest.approx(row["jaccard"], rel=1e-5)
            else:
                assert values["Dice"] is None and row["dice_status"] == "empty"
            assert values["status"]["hd95"] == row["hd95_status"]
    for cls in ("1", "2"):
        rows = written[written["class_index"] == int(cls)]
        assert summary["mean"][cls]["hd95"] == pytest.approx(rows["hd95"].mean(), rel=1e-5)
        assert summary["mean"][cls]["n_ref"] == pytest.approx(
            np.mean([e["metrics"][cls]["n_ref"] for e in summary["metric_per_case"]]))
        counts = summary["counts"][cls]["dice"]
        assert counts["penalised"] == (rows["dice_status"] == "penalised").sum()
        assert sum(counts.values()) == 2
    assert summary["foreground_mean"]["dice"] == pytest.approx(
        written.groupby("class_index")["dice"].mean().mean(), rel=1e-5)
    assert sum(summary["counts"]["foreground"]["hd95"].values()) == 4

    # samples.npz: the first test case's slice and the activation maps of V_E, V_LLM, V_D
    s = np.load(run / "samples.npz")
    assert s["image"].shape == (2, 16, 16) and s["label"].shape == s["pred"].shape == (16, 16)
    assert str(s["case_id"]) == test_ids[0]
    assert s["label"].any()  # the slice goes through the foreground
    for name in ("act_V_E", "act_V_LLM", "act_V_D"):
        assert s[name].shape == (16, 16) and np.isfinite(s[name]).all() and (s[name] >= 0).all(), name
    case_dice = written[written["case_id"] == test_ids[0]]["dice"].mean()
    assert float(s["dice"]) == pytest.approx(case_dice, rel=1e-4)
    # and every test case's own slice (channel 0), from which figures pick best, median and worst
    assert [str(s[f"case{i}_id"]) for i in range(len(test_ids))] == list(test_ids)
    assert f"case{len(test_ids)}_id" not in s.files
    for i, case in enumerate(test_ids):
        assert s[f"case{i}_image"].shape == (1, 16, 16) and s[f"case{i}_pred"].shape == (16, 16)
        assert s[f"case{i}_label"].any()  # its own largest-foreground slice
        assert float(s[f"case{i}_dice"]) == pytest.approx(written[written["case_id"] == case]["dice"].mean(), rel=1e-4)
    np.testing.assert_array_equal(s["case0_image"][0], s["image"][0])
    np.testing.assert_array_equal(s["case0_pred"], s["pred"])


def test_rebuilt_model_reproduces_validation(prostate_run):
    """The best checkpoint, rebuilt (random frozen block re-drawn from the seed), scores the
    validation set exactly as training did at its best epoch."""
    from medvisionllama.runtime import load_run_model
    from medvisionllama.checkpoint import load_checkpoint
    from medvisionllama.training.data import CaseDataset, make_loader
    from medvisionllama.data.preprocessed import read_preprocessed
    from medvisionllama.training.train import run_one_epoch_validation

    ckpt = load_checkpoint(prostate_run["run"] / "checkpoint_best.pt")
    model, config = load_run_model(ckpt, torch.device("cpu"))
    info = read_preprocessed(prostate_run["preprocessed"])
    val = json.loads(prostate_run["split"].read_text())["val"]
    loader = make_loader(CaseDataset(info.load_case, val), batch_size=2, shuffle=False, generator=None)
    _, dice = run_one_epoch_validation(model, loader, tuple(config.img_size), torch.device("cpu"), info.num_classes)
    best = ckpt["history"][ckpt["best_epoch"] - 1]
    assert dice == pytest.approx(best["val_dice"], abs=1e-12)


def test_full_size_uses_sliding_windows(tmp_path):
    """'full' preprocessing trains on random crops of --img-size and predicts with sliding windows."""
    t = _task(tmp_path, "Task04_Hippocampus", "full")
    run = tmp_path / "run"
    train_run(preprocessed=t["preprocessed"], split=t["split"], run_dir=run, model="vit", seed=0,
              settings=tiny_settings(epochs=1, lr=1e-3, img_size=(8, 8, 8)), progress=False)
    evaluate_run(run_dir=run, preprocessed=t["preprocessed"], split=t["split"], data_dir=t["data"],
                 device="cpu", progress=False)
    written = pd.read_csv(run / "metrics.csv")
    assert len(written) == 2 * 2 and written["size"].unique().tolist() == ["full"]
    assert len(list((run / "predictions").glob("*.nii.gz"))) == 2
    s = np.load(run / "samples.npz")
    assert "act_V_LLM" not in s.files  # vit has no bridge
    assert s["act_V_E"].shape == s["label"].shape == s["image"].shape[1:]


def test_evaluate_refuses_other_preprocessing(prostate_run, tmp_path):
    from medvisionllama.errors import InputError

    other = _task(tmp_path, "Task09_Spleen", "16x16x8")
    with pytest.raises(InputError, match=r"checkpoint_best\.pt: trained on size 16x16x8 with 2 channel"):
        evaluate_run(run_dir=prostate_run["run"], preprocessed=other["preprocessed"], split=other["split"],
                     data_dir=other["data"], device="cpu", progress=False)
