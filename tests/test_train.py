"""Training: a tiny run lowers the loss, resume is exact, bad checkpoints and NaN losses fail clearly."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medvisionllama.errors import InputError
from medvisionllama.training.train import HISTORY_COLUMNS, NonFiniteLossError, train_run

from data_helpers import tiny_settings


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_tiny_task(root: Path, task: str = "Task09_Spleen", cases: int = 8, size: str = "16x16x8") -> dict[str, Path]:
    """A synthetic MSD task, its split and its preprocessed folder, via the data stages."""
    from medvisionllama.data.preprocess import preprocess_task
    from medvisionllama.data.split import split_task
    from medvisionllama.data.synthesize import synthesize_task

    data = synthesize_task(task, root / "data" / task, cases=cases, seed=0, max_dim=16)
    split = root / "splits" / f"{task}.json"
    split_task(data, split, seed=0)
    pre = root / "preprocessed" / task / size
    preprocess_task(data, size, pre)
    return {"data": data, "split": split, "preprocessed": pre}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return make_tiny_task(tmp_path_factory.mktemp("tiny"))


def _train(tiny, run_dir, preprocessed=None, **kw):
    return train_run(preprocessed=preprocessed or tiny["preprocessed"], split=tiny["split"], run_dir=run_dir,
                     model="vit", seed=0, settings=tiny_settings(**kw), progress=False)


def _history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv") as fh:
        return list(csv.DictReader(fh))


def test_two_epochs_lower_the_loss(tiny, tmp_path):
    run = tmp_path / "run"
    summary = _train(tiny, run)
    rows = _history(run)
    assert list(rows[0]) == list(HISTORY_COLUMNS) and len(rows) == 2
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[1]["val_loss"]) < float(rows[0]["val_loss"])
    for name in ("run.json", "checkpoint_last.pt", "checkpoint_best.pt"):
        assert (run / name).is_file(), name
    stored = json.loads((run / "run.json").read_text())
    assert stored == json.loads(json.dumps(summary))
    assert stored["params"]["total"] == stored["params"]["trainable"] > 0
    assert stored["seed"] == 0 and stored["version"] and stored["device"] == "cpu"
    assert stored["training"]["augment"] is False and stored["data"]["kind"] == "CT"
    ckpt = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["model_config"]["hidden_size"] == 16
    assert {"torch", "numpy", "python", "generator"} <= set(ckpt["rng"])
    assert not list(run.glob(".*tmp"))  # no temporary files left behind


def test_resume_equals_uninterrupted_run(tiny, tmp_path):
    # augmentation and dropout on, so every RNG (augment draws, shuffling, dropout) is exercised
    kw = dict(augment="on", dropout=0.1)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(tiny, straight, epochs=3, **kw)
    _train(tiny, resumed, epochs=2, **kw)
    _train(tiny, resumed, epochs=3, **kw)  # continues from checkpoint_last.pt (epoch 2)
    a, b = _history(straight), _history(resumed)
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}
    ca = torch.load(straight / "checkpoint_last.pt", weights_only=True)
    cb = torch.load(resumed / "checkpoint_last.pt", weights_only=True)
    assert ca["model_state"].keys() == cb["model_state"].keys()
    for key in ca["model_state"]:
        assert torch.equal(ca["model_state"][key], cb["model_state"][key]), key
    for key, state in ca["optimizer_state"]["state"].items():
        assert torch.equal(state["exp_avg"], cb["optimizer_state"]["state"][key]["exp_avg"])
    assert ca["best_epoch"] == cb["best_epoch"] and torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])


def test_changed_settings_retrain_from_scratch_and_set_the_old_files_aside(tiny, tmp_path, caplog):
    run, straight = tmp_path / "run", tmp_path / "straight"
    _train(tiny, run, epochs=2)
    old = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    _train(tiny, straight, epochs=2, lr=1e-3)
    with caplog.at_level("WARNING"):
        _train(tiny, run, epochs=2, lr=1e-3)  # Snakemake re-runs the job when a setting changes
    assert "training.lr" in caplog.text and "retraining from scratch" in caplog.text
    assert {p.name: p.read_bytes() for p in (run / "superseded").iterdir()} == old
    def rows(folder):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in _history(folder)]

    assert rows(run) == rows(straight)
    a = torch.load(run / "checkpoint_last.pt", weights_only=True)["model_state"]
    b = torch.load(straight / "checkpoint_last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    # fewer epochs than the checkpoint holds: also a retraining, named in the log
    caplog.clear()
    with caplog.at_level("WARNING"):
        _train(tiny, run, epochs=1, lr=1e-3)
    assert "training.epochs: 2 in checkpoint, 1 requested" in caplog.text
    assert len(_history(run)) == 1


def test_a_run_whose_training_label_changed_retrains_and_sets_the_whole_old_run_aside(tiny, tmp_path, caplog):
    """The run's identity is what it was made from: one edited label in the preprocessed arrays
    (the same path, the same settings) retrains; the old run (run.json, history, metrics,
    predictions, checkpoints) is kept whole in superseded/, and the log says which input changed."""
    pre = tmp_path / "preprocessed"
    shutil.copytree(tiny["preprocessed"], pre)
    run = tmp_path / "run"
    old = train_run(preprocessed=pre, split=tiny["split"], run_dir=run, model="vit", seed=0,
                    settings=tiny_settings(epochs=2), progress=False)
    assert set(old["inputs"]) == {"preprocessed", "split", "llm_layer", "settings"}
    (run / "metrics.csv").write_text("case_id,dice\nx,0.5\n")
    (run / "predictions").mkdir()
    (run / "predictions" / "case.nii.gz").write_bytes(b"prediction")
    before = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    train_case = json.loads(tiny["split"].read_text())["train"][0]
    label = np.load(pre / "cases" / f"{train_case}_label.npy")
    label[label > 0] = 0  # the annotator removed this case's foreground
    np.save(pre / "cases" / f"{train_case}_label.npy", label)
    for name in ("run.json", "history.csv"):  # what Snakemake deletes before it re-runs the job
        (run / name).unlink()
    with caplog.at_level("WARNING"):
        new = train_run(preprocessed=pre, split=tiny["split"], run_dir=run, model="vit", seed=0,
                        settings=tiny_settings(epochs=2), progress=False)
    assert f"the preprocessed arrays ({pre}) changed" in caplog.text and "retraining from scratch" in caplog.text
    aside = run / "superseded"
    kept = {p.relative_to(aside).as_posix(): p.read_bytes() for p in aside.rglob("*") if p.is_file()}
    assert {k: v for k, v in kept.items() if k not in ("run.json", "history.csv")} == \
        {k: v for k, v in before.items() if k not in ("run.json", "history.csv")}
    restored = json.loads(kept["run.json"])  # written back from the checkpoint: the old run stays whole
    assert restored["inputs"] == old["inputs"] and restored["restored_from"] == "checkpoint_last.pt"
    assert kept["history.csv"].splitlines()[0] == before["history.csv"].splitlines()[0]
    assert len(kept["history.csv"].splitlines()) == 3
    assert new["inputs"]["preprocessed"] != old["inputs"]["preprocessed"]
    assert new["inputs"]["split"] == old["inputs"]["split"] and new["inputs"]["settings"] == old["inputs"]["settings"]
    assert not (run / "metrics.csv").exists() and not (run / "predictions").exists()
    assert json.loads((run / "run.json").read_text())["inputs"] == new["inputs"]
    new_state = torch.load(run / "checkpoint_last.pt", weights_only=True)["model_state"]
    old_state = torch.load(aside / "checkpoint_last.pt", weights_only=True)["model_state"]
    assert any(not torch.equal(new_state[k], old_state[k]) for k in new_state)  # retrained, not resumed


def test_an_edited_split_retrains_and_runtime_settings_do_not(tiny, tmp_path, caplog):
    run = tmp_path / "run"
    _train(tiny, run, epochs=2)
    checkpoint = (run / "checkpoint_last.pt").read_bytes()
    # byte-identical inputs elsewhere, another device spelling, data-loader workers: the same run
    pre = tmp_path / "copy"
    shutil.copytree(tiny["preprocessed"], pre)
    (pre / ".snakemake_timestamp").write_text("")
    for kw in ({"num_workers": 2}, {"device": "auto"}):
        with caplog.at_level("INFO"):
            train_run(preprocessed=pre, split=tiny["split"], run_dir=run, model="vit", seed=0,
                      settings=tiny_settings(epochs=2, **kw), progress=False)
        assert (run / "checkpoint_last.pt").read_bytes() == checkpoint, kw
        assert not (run / "superseded").exists()
    # a hand-edited split: one validation case moved into training
    split = json.loads(tiny["split"].read_text())
    split["train"].append(split["val"].pop())
    edited = tmp_path / "split.json"
    edited.write_text(json.dumps(split))
    with caplog.at_level("WARNING"):
        train_run(preprocessed=pre, split=edited, run_dir=run, model="vit", seed=0,
                  settings=tiny_settings(epochs=2), progress=False)
    assert f"the split ({edited}) changed" in caplog.text
    assert (run / "superseded" / "checkpoint_last.pt").read_bytes() == checkpoint


def test_a_finished_run_rewrites_deleted_outputs_from_its_checkpoint(tiny, tmp_path):
    """`snakemake -f` deletes history.csv and run.json of a finished run; the rerun restores them."""
    run = tmp_path / "run"
    _train(tiny, run, epochs=2)
    history, summary = (run / "history.csv").read_bytes(), json.loads((run / "run.json").read_text())
    checkpoint = (run / "checkpoint_last.pt").read_bytes()
    (run / "history.csv").unlink()
    (run / "run.json").unlink()
    again = _train(tiny, run, epochs=2)
    assert (run / "history.csv").read_bytes() == history
    assert json.loads((run / "run.json").read_text()) == summary == json.loads(json.dumps(again))
    assert (run / "checkpoint_last.pt").read_bytes() == checkpoint  # nothing retrained


def test_corrupt_checkpoint_names_file(tiny, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"checkpoint_last\.pt: corrupt"):
        _train(tiny, run)
    # a truncated real checkpoint
    good = tmp_path / "good"
    _train(tiny, good, epochs=1)
    data = (good / "checkpoint_last.pt").read_bytes()
    (run / "checkpoint_last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"checkpoint_last\.pt: corrupt"):
        _train(tiny, run)


def test_nan_loss_names_epoch_and_step_and_keeps_checkpoints(tiny, tmp_path):
    run = tmp_path / "run"
    _train(tiny, run, epochs=1)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    poisoned = tmp_path / "poisoned"
    shutil.copytree(tiny["preprocessed"], poisoned)
    for path in (poisoned / "cases").glob("*_image.npy"):
        image = np.load(path)
        image[:] = np.nan
        np.save(path, image)
    # other arrays are another input: the epoch-1 run is set aside whole, training restarts on them
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 1, step 1 \(cases "):
        _train(tiny, run, epochs=2, preprocessed=poisoned)
    after = {p.name: p.read_bytes() for p in (run / "superseded").iterdir() if p.is_file()}
    assert after == before  # checkpoints, history and run.json of epoch 1 untouched
    assert not list(run.glob("checkpoint_*.pt"))  # nothing of the failed epoch looks finished


def test_cli_train(tiny, tmp_path):
    """`mvl train` reads the model and training settings from a config file, not from flags."""
    from medvisionllama.cli import main

    settings = tmp_path / "config.yaml"
    settings.write_text(yaml.safe_dump({
        "model": {"patch_size": 4, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "llm_layer": None,
                  "full_img_size": None},
        "training": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "augment": "auto", "device": "cpu", "num_workers": 0,
                     "seeds": [0], "threads": 1},
        "data": {"source": "synthetic"},  # other sections of a resolved config are ignored
    }))
    run = tmp_path / "cli"
    argv = ["train", "--config", str(settings), "--preprocessed", str(tiny["preprocessed"]), "--split",
            str(tiny["split"]), "--run-dir", str(run), "--model", "vit", "--attention", "hybrid-parallel",
            "--seed", "1", "--no-progress"]
    assert main(argv) == 0
    stored = json.loads((run / "run.json").read_text())
    assert stored["model_config"]["attention"] == "hybrid-parallel" and stored["seed"] == 1
    assert stored["model_config"]["hidden_size"] == 16 and stored["training"]["lr"] == 1e-3
    assert stored["training"]["augment"] is True  # auto: 5 training cases < 30
    settings.write_text(settings.read_text().replace("lr: 0.001", "lr: 0.002"))
    assert main(argv) == 0  # another lr: retrained, the old files set aside
    assert json.loads((run / "run.json").read_text())["training"]["lr"] == 2e-3
    assert json.loads((run / "superseded" / "run.json").read_text())["training"]["lr"] == 1e-3
    settings.write_text(settings.read_text().replace("hidden_size: 16", "hidden_sise: 16"))
    assert main(argv) == 2  # an unknown model setting: one-line error


# --- the data loader: persistent workers still draw each epoch's augmentations --------------------


def _case(case_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic (1, 8, 8, 8) image with a cube label (module level: workers import it)."""
    rng = np.random.default_rng(int(case_id[-1]))
    label = np.zeros((8, 8, 8), dtype=np.uint8)
    label[2:6, 1:5, 3:7] = 1
    return rng.normal(size=(1, 8, 8, 8)).astype(np.float32), label


def test_persistent_workers_draw_new_augmentations_each_epoch():
    from medvisionllama.training.data import CaseDataset, build_augmentation, make_loader

    ids = [f"case_{i}" for i in range(4)]
    dataset = CaseDataset(_case, ids, transform=build_augmentation(), seed=3)
    loader = make_loader(dataset, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(0),
                         num_workers=2)
    assert loader.persistent_workers and loader.prefetch_factor == 4
    drawn = {}
    for epoch in (1, 2):
        dataset.set_epoch(epoch)
        drawn[epoch] = {c: img for images, _, cases in loader for c, img in zip(cases, images)}
    assert sorted(drawn[1]) == sorted(drawn[2]) == ids
    assert any(not torch.equal(drawn[1][c], drawn[2][c]) for c in ids), "epoch 2 repeated epoch 1's draws"
    for epoch in (1, 2):  # the workers drew what the main process draws for (epoch, case)
        for i, c in enumerate(ids):
            assert torch.equal(drawn[epoch][c], dataset[(epoch, i)][0]), (epoch, c)


def test_workers_and_resume_equal_a_straight_run_without_workers(tiny, tmp_path):
    kw = dict(augment="on", dropout=0.1)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(tiny, straight, epochs=3, **kw)
    _train(tiny, resumed, epochs=2, num_workers=2, **kw)
    _train(tiny, resumed, epochs=3, num_workers=2, **kw)

    def rows(folder):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in _history(folder)]

    assert rows(straight) == rows(resumed)
    a = torch.load(straight / "checkpoint_last.pt", weights_only=True)["model_state"]
    b = torch.load(resumed / "checkpoint_last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
