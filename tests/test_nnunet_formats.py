"""summary.json as nnU-Net reads it: its own ``load_summary_json`` and ``compute_metrics``.

nnU-Net (``nnunetv2``) is not a dependency: where it is installed (``pip install --no-deps
nnunetv2==2.8.1``; its heavy imports — batchgenerators, SimpleITK, the plans handler — are
stubbed, only its evaluation module's functions run) the first test reads our file with nnU-Net's
loader and recomputes every case from the ``prediction_file``/``reference_file`` the file names
with nnU-Net's ``compute_metrics``. The second test checks nnU-Net's documented schema without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvisionllama.evaluation.evaluate import NNUNET_METRICS, run_summary
from medvisionllama.evaluation.metrics import SegmentationMetrics, confusion_counts
from medvisionllama.io_utils import write_json_atomic

CLASSES = {1: "liver", 2: "tumour"}
RUN = {"task": "Task03_Liver", "model": "vit", "attention": "hybrid-sequential", "size": "16x16x8", "seed": 0}


def cases(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Three cases with known overlaps: a partial hit, a missed tumour (penalised), and a case
    with no tumour in either mask (Dice undefined)."""
    rng = np.random.default_rng(0)
    out = {}
    for name, drop_tumour_pred, no_tumour in (("a", False, False), ("b", True, False), ("c", False, True)):
        label = np.zeros((10, 12, 6), np.uint8)
        label[2:8, 2:9, 1:5] = 1
        if not no_tumour:
            label[4:6, 4:7, 2:4] = 2
        pred = label.copy()
        flip = rng.random(label.shape) < 0.1
        pred[flip] = rng.integers(0, 2, size=flip.sum())  # noise, never tumour
        if drop_tumour_pred:
            pred[pred == 2] = 1
        out[name] = (pred, label)
    return out


def write_summary(root: Path) -> Path:
    scorer = SegmentationMetrics(CLASSES)
    confusion, files = {}, {}
    for case, (pred, label) in cases(root).items():
        paths = []
        for kind, array in (("pred", pred), ("ref", label)):
            path = root / kind / f"{case}.nii.gz"
            path.parent.mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.5, 1.0])), path)
            paths.append(str(path))
        scorer.update(case, pred, label, spacing=(0.8, 0.8, 2.5))
        counts = confusion_counts(pred, label, list(CLASSES))
        confusion[case] = {c: tuple(int(v) for v in counts[i]) for i, c in enumerate(CLASSES)}
        files[case] = (paths[0], paths[1])
    return write_json_atomic(root / "summary.json", run_summary(scorer, RUN, confusion=confusion, files=files)) or (
        root / "summary.json")


def nnunet_evaluation(monkeypatch) -> types.ModuleType:
    """``nnunetv2.evaluation.evaluate_predictions`` with its heavy imports stubbed."""
    if importlib.util.find_spec("nnunetv2") is None:
        pytest.skip("nnunetv2 is not installed (pip install --no-deps nnunetv2==2.8.1)")

    def stub(name: str, **attrs) -> None:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)

    def load_json(path):
        with open(path) as handle:
            return json.load(handle)

    for name in ("batchgenerators", "batchgenerators.utilities"):
        stub(name)
    stub("batchgenerators.utilities.file_and_folder_operations", load_json=load_json, save_json=None,
         subfiles=None, join=None, isfile=None)
    stub("nnunetv2.imageio.reader_writer_registry", determine_reader_writer_from_dataset_json=None,
         determine_reader_writer_from_file_ending=None)
    stub("nnunetv2.imageio.simpleitk_reader_writer", SimpleITKIO=None)
    stub("nnunetv2.utilities.plans_handling.plans_handler", PlansManager=None)
    monkeypatch.delitem(sys.modules, "nnunetv2.evaluation.evaluate_predictions", raising=False)
    return importlib.import_module("nnunetv2.evaluation.evaluate_predictions")


class NiftiSegReader:
    """The one method of nnU-Net's reader interface ``compute_metrics`` calls (nibabel)."""

    def read_seg(self, path):
        return np.asarray(nib.load(path).dataobj)[None], {}


def same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == pytest.approx(b, rel=1e-9)


def test_nnunet_reads_our_summary_and_agrees_case_by_case(tmp_path, monkeypatch):
    evaluation = nnunet_evaluation(monkeypatch)
    path = write_summary(tmp_path)
    loaded = evaluation.load_summary_json(str(path))  # nnU-Net's own loader
    assert set(loaded["mean"]) == {1, 2}  # its class keys: integers
    assert all(set(entry["metrics"]) == {1, 2} for entry in loaded["metric_per_case"])
    for entry in loaded["metric_per_case"]:
        theirs = evaluation.compute_metrics(entry["reference_file"], entry["prediction_file"], NiftiSegReader(), [1, 2])
        for cls in (1, 2):
            for metric in NNUNET_METRICS:
                assert same(entry["metrics"][cls][metric], float(theirs["metrics"][cls][metric])), (entry["case_id"], cls, metric)
    # nnU-Net's means: nan-mean over cases per class, then the mean over foreground classes
    for cls in (1, 2):
        values = [e["metrics"][cls]["Dice"] for e in loaded["metric_per_case"] if e["metrics"][cls]["Dice"] is not None]
        assert loaded["mean"][cls]["Dice"] == pytest.approx(np.mean(values))
    assert loaded["foreground_mean"]["Dice"] == pytest.approx(np.mean([loaded["mean"][c]["Dice"] for c in (1, 2)]))


def test_summary_follows_nnunets_documented_schema(tmp_path):
    """What nnU-Net documents and writes: metric_per_case (metrics by class, prediction_file,
    reference_file), mean by class, foreground_mean; Dice/IoU undefined (null) when the class is in
    neither mask, a miss scores 0; n_pred = TP + FP, n_ref = TP + FN."""
    summary = json.loads(write_summary(tmp_path).read_text())
    assert {"metric_per_case", "mean", "foreground_mean"} <= set(summary)
    assert set(summary["mean"]) == {"1", "2"} and all(k.isdigit() for k in summary["mean"])
    by_case = {e["case_id"]: e for e in summary["metric_per_case"]}
    for entry in by_case.values():
        assert Path(entry["prediction_file"]).is_file() and Path(entry["reference_file"]).is_file()
        for values in entry["metrics"].values():
            assert set(NNUNET_METRICS) <= set(values)
            assert values["n_pred"] == values["TP"] + values["FP"] and values["n_ref"] == values["TP"] + values["FN"]
    missed, absent = by_case["b"]["metrics"]["2"], by_case["c"]["metrics"]["2"]
    assert missed["Dice"] == missed["dice"] == 0 and missed["status"]["dice"] == "penalised"
    # nnU-Net: undefined where the class is in neither mask; ours: its best value, status empty
    assert absent["Dice"] is None and absent["IoU"] is None and absent["dice"] == 1 and absent["status"]["dice"] == "empty"
    tumour = [by_case[c]["metrics"]["2"]["Dice"] for c in ("a", "b")]
    assert summary["mean"]["2"]["Dice"] == pytest.approx(np.mean(tumour))  # the miss counts, the empty case not
    assert summary["foreground_mean"]["TP"] == pytest.approx(np.mean([summary["mean"][c]["TP"] for c in ("1", "2")]))
