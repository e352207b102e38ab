"""The Python API as a notebook uses it, on a tiny trained and evaluated run."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from data_helpers import tiny_settings

import medvisionllama as mvl

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Task09 ViT trained 2 epochs and evaluated, laid out as the pipeline lays it out."""
    from medvisionllama.data.preprocess import preprocess_task
    from medvisionllama.data.synthesize import synthesize_task
    from medvisionllama.evaluation.evaluate import evaluate_run
    from medvisionllama.training.train import train_run

    root = tmp_path_factory.mktemp("api")
    data = synthesize_task("Task09_Spleen", root / "data" / "Task09_Spleen", cases=6, seed=0, max_dim=16)
    ids = sorted(p.name[: -len(".nii.gz")] for p in (data / "labelsTr").glob("*.nii.gz"))
    split = root / "results" / "splits" / "Task09_Spleen.json"
    split.parent.mkdir(parents=True)
    split.write_text(json.dumps({"task": "Task09_Spleen", "seed": 0, "train": ids[:3], "val": ids[3:5], "test": ids[5:]}))
    pre = root / "results" / "preprocessed" / "Task09_Spleen" / "16x16x8"
    preprocess_task(data, "16x16x8", pre)
    run = root / "results" / "runs" / "Task09_Spleen" / "vit" / "hybrid-sequential" / "16x16x8" / "seed0"
    torch.set_num_threads(1)
    train_run(preprocessed=pre, split=split, run_dir=run, model="vit", seed=0, settings=tiny_settings(), progress=False)
    evaluate_run(run_dir=run, preprocessed=pre, split=split, data_dir=data, device="cpu", progress=False)
    return {"run": run, "data": data, "test": ids[5:]}


def test_a_notebook_session(trained, tmp_path):
    from medvisionllama.evaluation.predict import predict_files

    run = mvl.load_run(trained["run"])
    assert run.config.model == "vit" and run.data["size"] == "16x16x8" and run.class_names == {0: "background", 1: "spleen"}
    assert not run.model.training

    # an array and its affine, as a notebook holds them after nibabel.load: the same mask as `mvl predict`
    image_file = trained["data"] / "imagesTr" / f"{trained['test'][0]}.nii.gz"
    img = nib.load(image_file)
    array, affine = np.asarray(img.dataobj), img.affine
    mask = run.predict(array, affine)
    assert mask.shape == array.shape[:3] and mask.dtype == np.uint8
    reference = predict_files(checkpoint=trained["run"] / "checkpoint_best.pt", input=image_file,
                              output=tmp_path / "ref.nii.gz", device="cpu")[0]
    np.testing.assert_array_equal(mask, np.asarray(nib.load(reference).dataobj))
    # the evaluation's saved prediction is that same mask
    saved = nib.load(trained["run"] / "predictions" / f"{trained['test'][0]}.nii.gz")
    np.testing.assert_array_equal(mask, np.asarray(saved.dataobj))
    # the affine matters: the same voxels on a flipped grid give the flipped mask back on that grid
    flipped = affine @ np.diag([-1.0, 1.0, 1.0, 1.0]) + np.array([[0, 0, 0, affine[0, 0] * (array.shape[0] - 1)],
                                                                 [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(run.predict(array[::-1], flipped), mask[::-1])

    # a file in, a file out
    out = tmp_path / "seg.nii.gz"
    np.testing.assert_array_equal(run.predict_file(image_file, out), mask)
    assert np.allclose(nib.load(out).affine, affine)

    # a run's metrics and summary
    metrics = mvl.read_metrics(trained["run"])
    pd.testing.assert_frame_equal(metrics, run.metrics())
    assert set(metrics["case_id"]) == set(trained["test"]) and "dice" in metrics
    assert run.summary()["metric_per_case"][0]["prediction_file"].endswith(".nii.gz")

    # a fresh model
    net = mvl.build_model("mlp", in_channels=1, num_classes=3, img_size=(16, 16, 8), patch_size=8, hidden_size=16,
                          num_heads=2, num_layers=1)
    assert net(torch.zeros(1, 1, 16, 16, 8)).shape == (1, 3, 16, 16, 8)


def test_bad_inputs_are_one_line_errors(trained, tmp_path):
    with pytest.raises(mvl.InputError, match="not found"):
        mvl.load_run(tmp_path)
    run = mvl.load_run(trained["run"], checkpoint="last")
    with pytest.raises(mvl.InputError, match="expected \\(X, Y, Z\\)"):
        run.predict(np.zeros((4, 4)))
    with pytest.raises(mvl.InputError, match="invertible"):
        run.predict(np.zeros((16, 16, 8)), np.zeros((4, 4)))
    with pytest.raises(mvl.InputError, match="build_model"):
        mvl.build_model("vit", in_channels=1, num_classes=2, img_size=(16, 16, 8), colour="blue")
