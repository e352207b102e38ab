"""Every bad input to the data stages: an InputError naming the file and the problem, no output.

Each test breaks one thing in an otherwise valid synthetic task and checks the message and that
no output folder (or temporary sibling) is left behind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from data_helpers import assert_nothing_left, first_case, make_task, rewrite_nifti

from medvisionllama.cli import main as cli_main
from medvisionllama.data.io import check_finite, load_nifti, read_dataset_json
from medvisionllama.data.preprocess import preprocess_image, preprocess_task
from medvisionllama.data.split import split_task
from medvisionllama.data.synthesize import synthesize_task
from medvisionllama.errors import InputError


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    return make_task(tmp_path / "data", "Task09_Spleen", cases=3, max_dim=16)


def _preprocess_fails(task_dir: Path, tmp_path: Path, match: str, size: str = "8x8x4") -> str:
    out = tmp_path / "results" / "pre" / size
    with pytest.raises(InputError, match=match) as info:
        preprocess_task(task_dir, size, out)
    assert_nothing_left(out)
    return str(info.value)


def test_task_folder_without_dataset_json(task_dir: Path, tmp_path: Path) -> None:
    (task_dir / "dataset.json").unlink()
    _preprocess_fails(task_dir, tmp_path, r"Task09_Spleen/dataset\.json: missing")
    out = tmp_path / "split.json"
    with pytest.raises(InputError, match=r"dataset\.json: missing"):
        split_task(task_dir, out)
    assert not out.exists()


def test_task_folder_that_does_not_exist(tmp_path: Path) -> None:
    _preprocess_fails(tmp_path / "nowhere", tmp_path, r"nowhere: task folder does not exist")


def test_dataset_json_not_json(task_dir: Path, tmp_path: Path) -> None:
    (task_dir / "dataset.json").write_text('{"name": "Spleen",')
    _preprocess_fails(task_dir, tmp_path, r"dataset\.json: invalid JSON")


def test_dataset_json_missing_keys(task_dir: Path, tmp_path: Path) -> None:
    dataset = json.loads((task_dir / "dataset.json").read_text())
    del dataset["labels"], dataset["training"]
    (task_dir / "dataset.json").write_text(json.dumps(dataset))
    _preprocess_fails(task_dir, tmp_path, r"dataset\.json: missing key\(s\) labels, training")


def test_dataset_json_names_a_missing_file(task_dir: Path, tmp_path: Path) -> None:
    _, label = first_case(task_dir)
    label.unlink()
    message = _preprocess_fails(task_dir, tmp_path, r"dataset\.json: training\[0\] names label")
    assert str(label) in message and "does not exist" in message


def test_corrupt_nifti(task_dir: Path, tmp_path: Path) -> None:
    image, _ = first_case(task_dir)
    image.write_bytes(np.random.default_rng(0).bytes(2000))
    message = _preprocess_fails(task_dir, tmp_path, "corrupt or truncated NIfTI")
    assert message.startswith(str(image))


def test_truncated_nifti(task_dir: Path, tmp_path: Path) -> None:
    image, _ = first_case(task_dir)
    payload = image.read_bytes()
    image.write_bytes(payload[: len(payload) // 2])
    message = _preprocess_fails(task_dir, tmp_path, "corrupt or truncated NIfTI")
    assert message.startswith(str(image))
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_nifti(image)


def test_image_and_label_of_different_shapes(task_dir: Path, tmp_path: Path) -> None:
    image, label = first_case(task_dir)
    data = np.asanyarray(load_nifti(label).dataobj)
    rewrite_nifti(label, np.ascontiguousarray(data[:-2]))
    message = _preprocess_fails(task_dir, tmp_path, "must match")
    assert str(image) in message and str(label) in message
    assert str(data.shape) in message and str(data[:-2].shape) in message


def test_label_values_outside_the_label_map(task_dir: Path, tmp_path: Path) -> None:
    _, label = first_case(task_dir)
    data = np.asanyarray(load_nifti(label).dataobj).copy()
    data[0, 0, 0], data[1, 0, 0] = 5, 7
    rewrite_nifti(label, data)
    message = _preprocess_fails(task_dir, tmp_path, r"label values \[5, 7\] are not in dataset\.json's label map")
    assert message.startswith(str(label))


def test_channel_count_differs_from_modality(task_dir: Path, tmp_path: Path) -> None:
    dataset = json.loads((task_dir / "dataset.json").read_text())
    dataset["modality"] = {"0": "CT", "1": "PET"}
    (task_dir / "dataset.json").write_text(json.dumps(dataset))
    image, _ = first_case(task_dir)
    message = _preprocess_fails(task_dir, tmp_path, "has 1 channel")
    assert message.startswith(str(image)) and "modality lists 2" in message


def test_invalid_size_string(task_dir: Path, tmp_path: Path) -> None:
    _preprocess_fails(task_dir, tmp_path, r"invalid input size '64x64'", size="64x64")
    _preprocess_fails(task_dir, tmp_path, r"invalid input size '64x0x4'", size="64x0x4")


def test_unknown_task_name(tmp_path: Path) -> None:
    out = tmp_path / "data" / "Task11_Kidney"
    with pytest.raises(InputError, match=r"unknown task 'Task11_Kidney'"):
        synthesize_task("Task11_Kidney", out, cases=2, seed=0)
    assert_nothing_left(out)


@pytest.mark.parametrize(("cases", "seed", "max_dim", "flag"), [(0, 0, 16, "--cases"), (2, -1, 16, "--seed"), (2, 0, 4, "--max-dim")])
def test_bad_synthesize_arguments(tmp_path: Path, cases: int, seed: int, max_dim: int, flag: str) -> None:
    out = tmp_path / "Task09_Spleen"
    with pytest.raises(InputError, match=flag):
        synthesize_task("Task09", out, cases=cases, seed=seed, max_dim=max_dim)
    assert_nothing_left(out)


def test_failure_on_a_later_case_leaves_no_output(task_dir: Path, tmp_path: Path) -> None:
    dataset = read_dataset_json(task_dir)
    last = task_dir / dataset["training"][-1]["image"]
    last.write_bytes(b"not a nifti")
    out = tmp_path / "results" / "pre" / "8x8x4"
    for workers in (1, 2):
        with pytest.raises(InputError, match="corrupt or truncated"):
            preprocess_task(task_dir, "8x8x4", out, workers=workers)
        assert_nothing_left(out)


def test_cli_bad_input_exits_2_with_one_line(task_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pre"
    code = cli_main(["preprocess", "--task-dir", str(task_dir), "--size", "big", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("mvl preprocess: error: invalid input size 'big'")
    assert_nothing_left(out)
    code = cli_main(["split", "--task-dir", str(tmp_path / "missing"), "--output", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing: task folder does not exist" in err
    code = cli_main(["synthesize", "--task", "Task99", "--output", str(tmp_path / "t")])
    assert code == 2 and "unknown task 'Task99'" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused_with_their_count(task_dir: Path, tmp_path: Path, bad: float) -> None:
    image, _ = first_case(task_dir)
    data = np.asanyarray(load_nifti(image).dataobj).astype(np.float32)
    data[0, 0, 0] = bad
    data[-1, -1, -1] = bad
    data[1, 2, 0] = bad
    rewrite_nifti(image, data)
    message = _preprocess_fails(task_dir, tmp_path, r"3 non-finite voxel\(s\) \(NaN or Inf\)")
    assert message.startswith(f"{image}: ") and "\n" not in message
    # `mvl predict` reads new images with the same function
    with pytest.raises(InputError, match=r"3 non-finite voxel\(s\)"):
        preprocess_image(image, size="8x8x4", kind="CT", num_channels=1)


def test_check_finite_counts_every_bad_voxel_and_passes_integers(tmp_path: Path) -> None:
    array = np.zeros((4, 4, 4, 2), dtype=np.float64)
    array[..., 1] = np.nan  # a whole channel
    with pytest.raises(InputError, match=r"^img\.nii\.gz: 64 non-finite voxel\(s\) \(NaN or Inf\) out of 128"):
        check_finite(array, "img.nii.gz")
    check_finite(array[..., 0], "img.nii.gz")
    check_finite(np.full((2, 2), 7, dtype=np.int16), "int.nii.gz")


@pytest.mark.parametrize(("shift", "refused"), [(50.0, True), (0.01, True), (0.0004, False)])
def test_label_off_its_image_by_a_translation(task_dir: Path, tmp_path: Path, shift: float, refused: bool) -> None:
    image, label = first_case(task_dir)
    img = load_nifti(label)
    affine = np.array(img.affine, dtype=float)
    affine[:3, 3] += [shift, 0.0, 0.0]  # same shape, same axis codes
    rewrite_nifti(label, np.asanyarray(img.dataobj), affine)
    out = tmp_path / "results" / "pre" / "8x8x4"
    if not refused:
        preprocess_task(task_dir, "8x8x4", out)
        assert (out / "manifest.json").is_file()
        return
    message = _preprocess_fails(task_dir, tmp_path, "does not lie on the grid of image")
    assert message.startswith(f"label {label} ") and str(image) in message
    reported = re.search(r"differ by (\S+) mm in translation", message)
    assert reported and float(reported.group(1)) == pytest.approx(shift, rel=1e-3)  # float32 header
    assert "\n" not in message


def test_label_with_other_voxel_spacing_is_refused(task_dir: Path, tmp_path: Path) -> None:
    image, label = first_case(task_dir)
    img = load_nifti(label)
    affine = np.array(img.affine, dtype=float)
    affine[:3, :3] *= 1.01  # 1 % larger voxels: same shape and axis codes
    rewrite_nifti(label, np.asanyarray(img.dataobj), affine)
    message = _preprocess_fails(task_dir, tmp_path, "does not lie on the grid of image")
    assert str(image) in message and str(label) in message and "in rotation/scale" in message
