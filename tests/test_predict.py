"""``mvl predict``: the output has the input's grid and affine, whatever the input's orientation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medvisionllama.errors import InputError
from medvisionllama.evaluation.predict import predict_files

from data_helpers import tiny_settings


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A one-epoch Task09 (1 channel, CT) run at 16x16x8."""
    from medvisionllama.data.preprocess import preprocess_task
    from medvisionllama.data.split import split_task
    from medvisionllama.data.synthesize import synthesize_task
    from medvisionllama.training.train import train_run

    root = tmp_path_factory.mktemp("predict")
    data = synthesize_task("Task09_Spleen", root / "data", cases=8, seed=0, max_dim=16)
    split_task(data, root / "split.json", seed=0)
    preprocess_task(data, "16x16x8", root / "pre")
    torch.set_num_threads(1)
    train_run(preprocessed=root / "pre", split=root / "split.json", run_dir=root / "run", model="vit", seed=0,
              settings=tiny_settings(epochs=1, batch_size=4), progress=False)
    return {"data": data, "checkpoint": root / "run" / "checkpoint_best.pt", "root": root}


def _non_ras_copy(src: Path, dst: Path) -> nib.Nifti1Image:
    """The same physical image stored with permuted, flipped axes (a PIL-like, non-RAS affine)."""
    img = nib.load(src)
    data = np.asarray(img.dataobj)
    shape = data.shape
    new = np.flip(np.transpose(data, (2, 0, 1)), axis=0)  # new[a, b, c] = data[b, c, Z-1-a]
    m = np.zeros((4, 4))  # new voxel (a, b, c, 1) -> old voxel (b, c, Z-1-a, 1)
    m[0, 1] = 1
    m[1, 2] = 1
    m[2, 0] = -1
    m[2, 3] = shape[2] - 1
    m[3, 3] = 1
    affine = img.affine @ m
    out = nib.Nifti1Image(np.ascontiguousarray(new), affine)
    nib.save(out, dst)
    return out


def test_output_has_input_shape_and_affine_non_ras(trained, tmp_path):
    src = trained["data"] / "imagesTs" / sorted(p.name for p in (trained["data"] / "imagesTs").iterdir())[0]
    moved = _non_ras_copy(src, tmp_path / "moved.nii.gz")
    assert nib.aff2axcodes(moved.affine) != ("R", "A", "S")
    out_a = predict_files(checkpoint=trained["checkpoint"], input=src, output=tmp_path / "a.nii.gz", device="cpu")[0]
    out_b = predict_files(checkpoint=trained["checkpoint"], input=tmp_path / "moved.nii.gz",
                          output=tmp_path / "b.nii.gz", device="cpu")[0]
    a, b = nib.load(out_a), nib.load(out_b)
    assert b.shape == moved.shape and np.allclose(b.affine, moved.affine)
    assert a.shape == nib.load(src).shape and np.allclose(a.affine, nib.load(src).affine)
    assert np.asarray(b.dataobj).dtype == np.uint8
    # same physical image -> same segmentation, voxel for voxel once the axes are put back
    back = np.transpose(np.flip(np.asarray(b.dataobj), axis=0), (1, 2, 0))
    np.testing.assert_array_equal(back, np.asarray(a.dataobj))


def test_folder_in_folder_out_and_cli(trained, tmp_path):
    from medvisionllama.cli import main

    rc = main(["predict", "--checkpoint", str(trained["checkpoint"]), "--input", str(trained["data"] / "imagesTs"),
               "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 0
    inputs = sorted(p.name for p in (trained["data"] / "imagesTs").iterdir())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == inputs
    for name in inputs:
        assert nib.load(tmp_path / "out" / name).shape == nib.load(trained["data"] / "imagesTs" / name).shape


def test_wrong_channel_count_names_file(trained, tmp_path):
    bad = tmp_path / "two_channels.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8, 2), dtype=np.float32), np.eye(4)), bad)
    with pytest.raises(InputError, match=r"two_channels\.nii\.gz: has 2 channel"):
        predict_files(checkpoint=trained["checkpoint"], input=bad, output=tmp_path / "x.nii.gz", device="cpu")
    with pytest.raises(InputError, match=r"nothing\.pt: checkpoint does not exist"):
        predict_files(checkpoint=tmp_path / "nothing.pt", input=bad, output=tmp_path / "x.nii.gz", device="cpu")
