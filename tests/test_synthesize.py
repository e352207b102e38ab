"""Synthetic MSD tasks: layout, dataset.json, determinism, geometry, learnable contrast."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from data_helpers import make_task, tree_bytes

from medvisionllama.cli import main as cli_main
from medvisionllama.data.io import list_labelled_cases, load_nifti, read_dataset_json
from medvisionllama.data.synthesize import ANATOMIES, synthesize_task
from medvisionllama.tasks import TASKS


def test_layout_and_dataset_json_match_the_real_task(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task03_Liver", cases=3)
    info = TASKS["Task03_Liver"]
    assert sorted(p.name for p in task_dir.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]
    dataset = read_dataset_json(task_dir)
    assert dataset["description"] == info.description
    assert dataset["modality"] == info.modality and dataset["labels"] == info.labels
    assert dataset["tensorImageSize"] == "3D"
    assert {"name", "reference", "licence", "release"} <= dataset.keys()
    assert dataset["numTraining"] == 3 and len(dataset["training"]) == 3
    assert dataset["numTest"] == len(dataset["test"]) == len(list((task_dir / "imagesTs").iterdir()))
    assert dataset["training"][0] == {"image": "./imagesTr/synthetic_liver_0.nii.gz", "label": "./labelsTr/synthetic_liver_0.nii.gz"}
    assert [c.case_id for c in list_labelled_cases(task_dir)] == ["synthetic_liver_0", "synthetic_liver_1", "synthetic_liver_2"]
    assert sorted(p.name for p in (task_dir / "labelsTr").iterdir()) == [f"synthetic_liver_{i}.nii.gz" for i in range(3)]
    image = load_nifti(task_dir / "imagesTr/synthetic_liver_0.nii.gz")
    label = load_nifti(task_dir / "labelsTr/synthetic_liver_0.nii.gz")
    assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
    assert image.shape == label.shape and np.allclose(image.affine, label.affine)
    assert np.asanyarray(image.dataobj).min() < -950  # air, in HU


def test_same_seed_same_bytes_and_different_seed_differs(tmp_path: Path) -> None:
    first = tree_bytes(make_task(tmp_path / "a", "Task05_Prostate", cases=2))
    again = tree_bytes(make_task(tmp_path / "b", "Task05_Prostate", cases=2))
    other = tree_bytes(make_task(tmp_path / "c", "Task05_Prostate", cases=2, seed=1))
    assert first == again
    assert first.keys() == other.keys()
    assert first["imagesTr/synthetic_prostate_00.nii.gz"] != other["imagesTr/synthetic_prostate_00.nii.gz"]
    assert first["labelsTr/synthetic_prostate_00.nii.gz"] != other["labelsTr/synthetic_prostate_00.nii.gz"]


def test_adding_cases_keeps_earlier_cases(tmp_path: Path) -> None:
    fewer = tree_bytes(make_task(tmp_path / "a", "Task02_Heart", cases=2))
    more = tree_bytes(make_task(tmp_path / "b", "Task02_Heart", cases=3))
    for name in ("imagesTr/synthetic_la_001.nii.gz", "imagesTr/synthetic_la_002.nii.gz", "labelsTr/synthetic_la_002.nii.gz"):
        assert fewer[name] == more[name]


def test_anisotropic_spacing_and_lps_orientation(tmp_path: Path) -> None:
    task_dir = make_task(tmp_path, "Task08_HepaticVessel", cases=1, max_dim=48)
    image = nib.load(task_dir / "imagesTr/synthetic_hepaticvessel_001.nii.gz")
    assert max(image.shape) <= 48
    sx, sy, sz = image.header.get_zooms()
    assert sx == pytest.approx(sy) and sz / sx > 3  # thick slices, as the real 0.8 x 0.8 x 5 mm
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    fov = np.asarray(image.shape) * np.asarray((sx, sy, sz))
    assert fov[0] == pytest.approx(512 * 0.8, rel=0.15)  # the real field of view, in mm
    hippocampus = nib.load(make_task(tmp_path, "Task04_Hippocampus", cases=1) / "imagesTr/synthetic_hippocampus_001.nii.gz")
    assert nib.aff2axcodes(hippocampus.affine) == ("R", "S", "A")  # a permuted frame


@pytest.mark.parametrize(("task", "channels"), [("Task01_BrainTumour", 4), ("Task05_Prostate", 2)])
def test_multichannel_tasks_are_4d(tmp_path: Path, task: str, channels: int) -> None:
    task_dir = make_task(tmp_path, task, cases=1)
    dataset = json.loads((task_dir / "dataset.json").read_text())
    assert dataset["tensorImageSize"] == "4D"
    case = list_labelled_cases(task_dir)[0]
    image, label = nib.load(case.image), nib.load(case.label)
    assert image.ndim == 4 and image.shape[3] == channels and image.shape[:3] == label.shape
    assert image.get_data_dtype() == np.float32


@pytest.mark.parametrize("task", list(TASKS))
def test_every_class_present_with_clear_contrast(tmp_path: Path, task: str) -> None:
    task_dir = make_task(tmp_path, task, cases=1, max_dim=32)
    case = list_labelled_cases(task_dir)[0]
    image = np.asanyarray(load_nifti(case.image).dataobj).astype(np.float32)
    label = np.asanyarray(load_nifti(case.label).dataobj)
    image = image.reshape(*label.shape, -1)  # (X, Y, Z, C)
    noise = np.asarray(ANATOMIES[task].noise)
    for value in range(1, TASKS[task].num_classes):
        inside = label == value
        assert inside.mean() > 0.005, f"class {value} covers only {inside.mean():.2%}"
        # from each neighbouring tissue, some channel separates the class by a few noise levels
        shell = ndimage.binary_dilation(inside, iterations=2) & ~inside
        for other in np.unique(label[shell]):
            near = shell & (label == other)
            if near.sum() < 5:
                continue
            contrast = np.abs(np.median(image[inside], axis=0) - np.median(image[near], axis=0)) / noise  # (C,)
            assert contrast.max() > 2.5, f"class {value} vs {other}: contrast {contrast} noise levels"


def test_cli_synthesize_with_short_task_name(tmp_path: Path) -> None:
    out = tmp_path / "Task09_Spleen"
    code = cli_main(["synthesize", "--task", "Task09", "--output", str(out), "--cases", "2", "--seed", "3", "--max-dim", "16"])
    assert code == 0
    assert json.loads((out / "dataset.json").read_text())["name"] == "Spleen"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["synthetic_spleen_1.nii.gz", "synthetic_spleen_2.nii.gz"]


def test_replaces_an_existing_folder(tmp_path: Path) -> None:
    out = tmp_path / "Task09_Spleen"
    synthesize_task("Task09", out, cases=3, seed=0, max_dim=16)
    synthesize_task("Task09", out, cases=2, seed=0, max_dim=16)
    assert len(list((out / "imagesTr").iterdir())) == 2
