"""Preprocessing: shapes, normalisation, labels, orientation, manifest and the way back."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from data_helpers import make_task, rewrite_nifti

from medvisionllama.cli import main as cli_main
from medvisionllama.data.io import list_labelled_cases
from medvisionllama.data.preprocess import (
    load_preprocessed_case,
    manifest_case,
    preprocess_image,
    preprocess_task,
    read_manifest,
    restore_to_original,
)
from medvisionllama.errors import InputError


def _raw(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def test_shapes_dtypes_and_manifest(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task01_BrainTumour", cases=3, max_dim=20)
    out = tmp_path / "pre" / "Task01_BrainTumour" / "16x16x8"
    manifest = preprocess_task(task_dir, "16x16x8", out)
    assert read_manifest(out) == json.loads(json.dumps(manifest))
    assert manifest["kind"] == "MRI" and manifest["size"] == "16x16x8" and manifest["num_channels"] == 4
    assert manifest["labels"]["3"] == "enhancing tumour" and manifest["orientation"] == "RAS"
    assert [c["case_id"] for c in manifest["cases"]] == ["synthetic_BRATS_001", "synthetic_BRATS_002", "synthetic_BRATS_003"]
    assert sorted(p.name for p in (out / "cases").iterdir()) == sorted(
        f"synthetic_BRATS_00{i}_{role}.npy" for i in (1, 2, 3) for role in ("image", "label")
    )
    image, label = load_preprocessed_case(out, "synthetic_BRATS_002")
    assert image.shape == (4, 16, 16, 8) and image.dtype == np.float32
    assert label.shape == (16, 16, 8) and label.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1, 2, 3} and (label == 1).any()
    entry = manifest_case(manifest, "synthetic_BRATS_002")
    assert entry["source"] == "imagesTr/synthetic_BRATS_002.nii.gz" and entry["files"]["label"] == "cases/synthetic_BRATS_002_label.npy"
    assert len(entry["original_shape"]) == 3 and entry["shape"] == [16, 16, 8]
    # the preprocessed grid spans the same field of view
    fov = np.multiply(entry["canonical_shape"], entry["canonical_spacing"])
    assert np.allclose(np.multiply(entry["shape"], entry["spacing"]), fov)


def test_mri_zscore_over_nonzero_voxels(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task01_BrainTumour", cases=1, max_dim=20)
    out = tmp_path / "full"
    preprocess_task(task_dir, "full", out)
    image, _ = load_preprocessed_case(out, "synthetic_BRATS_001")
    raw = np.moveaxis(_raw(list_labelled_cases(task_dir)[0].image), -1, 0)  # (C, X, Y, Z); RAS already
    for channel, raw_channel in zip(image, raw):
        nonzero = raw_channel != 0
        assert np.array_equal(channel == 0, ~nonzero)  # zeros stay 0 (skull-stripped background)
        assert channel[nonzero].mean() == pytest.approx(0.0, abs=1e-4)
        assert channel[nonzero].std() == pytest.approx(1.0, abs=1e-3)


def test_ct_window_and_zscore(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task03_Liver", cases=1, max_dim=20)
    manifest = preprocess_task(task_dir, "full", tmp_path / "full")
    image, _ = load_preprocessed_case(tmp_path / "full", "synthetic_liver_0")
    raw = _raw(list_labelled_cases(task_dir)[0].image).astype(np.float32)
    stats = manifest["cases"][0]["intensity"][0]
    low, high = stats["clip"]
    assert -1000 < low < high < 400  # the window of body voxels, not of the air
    body = raw[::-1, ::-1, :] > -500  # the LPS file is flipped to RAS
    assert image[0][body].mean() == pytest.approx(0.0, abs=1e-3)
    assert image[0][body].std() == pytest.approx(1.0, abs=1e-2)
    assert image.max() == pytest.approx((high - stats["mean"]) / stats["std"], rel=1e-5)
    assert image.min() == pytest.approx((low - stats["mean"]) / stats["std"], rel=1e-5)


@pytest.mark.parametrize(
    ("task", "to_ras"),
    [
        ("Task01_BrainTumour", lambda a: a),  # RAS
        ("Task03_Liver", lambda a: a[::-1, ::-1, :]),  # LPS: flip x and y
        ("Task04_Hippocampus", lambda a: np.transpose(a, (0, 2, 1))),  # R, S, A: swap y and z
    ],
)
def test_full_size_reorients_and_restores_exactly(tmp_path: Path, task: str, to_ras) -> None:
    task_dir = make_task(tmp_path, task, cases=2, max_dim=20)
    out = tmp_path / "full"
    manifest = preprocess_task(task_dir, "full", out)
    for case in list_labelled_cases(task_dir):
        original = _raw(case.label)
        _, label = load_preprocessed_case(out, case.case_id)
        assert np.array_equal(label, to_ras(original))  # label values and positions preserved
        restored = restore_to_original(label, manifest_case(manifest, case.case_id))
        assert restored.dtype == np.uint8 and np.array_equal(restored, original)


def test_restore_from_a_resized_grid_lines_up(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task03_Liver", cases=1, max_dim=24)
    out = tmp_path / "small"
    manifest = preprocess_task(task_dir, "16x16x8", out)
    _, label = load_preprocessed_case(out, "synthetic_liver_0")
    restored = restore_to_original(label, manifest["cases"][0])
    original = _raw(task_dir / "labelsTr/synthetic_liver_0.nii.gz")
    assert restored.shape == original.shape
    for value in (1, 2):
        dice = 2 * ((restored == value) & (original == value)).sum() / ((restored == value).sum() + (original == value).sum())
        assert dice > 0.6, f"class {value}: Dice {dice:.2f} after the round trip"
    with pytest.raises(ValueError, match="preprocessed shape"):
        restore_to_original(label[:-1], manifest["cases"][0])


def test_preprocess_image_of_an_unlabelled_case(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task05_Prostate", cases=1, max_dim=20)
    path = task_dir / "imagesTs" / "synthetic_prostate_01.nii.gz"
    image, meta = preprocess_image(path, size="12x12x6", kind="MRI", num_channels=2)
    assert image.shape == (2, 12, 12, 6) and image.dtype == np.float32
    assert meta["original_shape"] == list(nib.load(path).shape[:3]) and meta["num_channels"] == 2
    prediction = np.ones((12, 12, 6), dtype=np.uint8)
    assert restore_to_original(prediction, meta).shape == tuple(meta["original_shape"])
    with pytest.raises(InputError, match=r"synthetic_prostate_01\.nii\.gz.*2 channel"):
        preprocess_image(path, size="12x12x6", kind="MRI", num_channels=4)


def test_workers_give_the_same_arrays(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task09_Spleen", cases=3, max_dim=16)
    one = preprocess_task(task_dir, "8x8x8", tmp_path / "one", workers=1)
    two = preprocess_task(task_dir, "8x8x8", tmp_path / "two", workers=2)
    assert one == two
    for case in one["cases"]:
        for a, b in zip(load_preprocessed_case(tmp_path / "one", case["case_id"]), load_preprocessed_case(tmp_path / "two", case["case_id"])):
            assert np.array_equal(a, b)


def test_cli_preprocess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task_dir = make_task(tmp_path, "Task09_Spleen", cases=2, max_dim=16)
    out = tmp_path / "pre" / "Task09_Spleen" / "8x8x4"
    assert cli_main(["preprocess", "--task-dir", str(task_dir), "--size", "8x8x4", "--output", str(out)]) == 0
    assert read_manifest(out)["size"] == "8x8x4"
    assert "preprocess Task09_Spleen 8x8x4" in capsys.readouterr().err  # the progress bar


def test_multichannel_image_in_lps_is_flipped_per_channel(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task05_Prostate", cases=1, max_dim=20)
    path = list_labelled_cases(task_dir)[0].image
    raw = _raw(path)  # (X, Y, Z, C)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ nib.load(path).affine
    rewrite_nifti(path, raw, lps)
    image, meta = preprocess_image(path, size="full", kind="MRI", num_channels=2)
    assert meta["original_orientation"] == ["L", "P", "S"]
    expected = np.moveaxis(raw[::-1, ::-1, :, :], -1, 0)  # (C, X, Y, Z) in RAS
    for channel, raw_channel in zip(image, expected):
        nonzero = raw_channel != 0
        assert np.corrcoef(channel[nonzero], raw_channel[nonzero])[0, 1] > 0.999  # same voxels, z-scored
