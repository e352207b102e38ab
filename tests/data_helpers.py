"""Small synthetic task folders and checks shared by the data-stage tests."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pytest

from medvisionllama.data.io import make_nifti, nifti_to_gz_bytes
from medvisionllama.data.synthesize import synthesize_task


def make_task(root: Path, task: str = "Task09_Spleen", cases: int = 3, max_dim: int = 16, seed: int = 0) -> Path:
    """A synthetic MSD task folder ``root/{task}`` (fast: tiny images)."""
    return synthesize_task(task, root / task, cases=cases, seed=seed, max_dim=max_dim)


def first_case(task_dir: Path) -> tuple[Path, Path]:
    """``(image, label)`` paths of the first training case listed in ``dataset.json``."""
    entry = json.loads((task_dir / "dataset.json").read_text())["training"][0]
    return task_dir / entry["image"], task_dir / entry["label"]


def rewrite_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Overwrite ``path`` with ``data`` (keeping its affine unless one is given)."""
    if affine is None:
        affine = nib.load(path).affine
    path.write_bytes(nifti_to_gz_bytes(make_nifti(data, affine)))


def assert_nothing_left(output: Path) -> None:
    """Neither ``output`` nor a temporary sibling of it exists."""
    assert not output.exists(), f"{output} was left behind"
    if output.parent.exists():
        leftovers = [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]
        assert not leftovers, f"temporary files left beside {output}: {leftovers}"


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


TINY_MODEL = dict(patch_size=4, hidden_size=16, num_layers=1, num_heads=2)
_TRAINING_KEYS = ("epochs", "batch_size", "lr", "augment", "device", "num_workers")


def tiny_settings(**overrides):
    """RunSettings of a tiny CPU run (TINY_MODEL, 2 epochs, batch 2, lr 1e-2, no augmentation);
    each keyword overrides a training setting or, if it is not one, a model setting."""
    from medvisionllama.training.train import RunSettings, TrainingSettings

    training = dict(epochs=2, batch_size=2, lr=1e-2, augment="off", device="cpu")
    model = dict(TINY_MODEL)
    for key, value in overrides.items():
        (training if key in _TRAINING_KEYS else model)[key] = value
    return RunSettings(model=model, training=TrainingSettings(**training))


def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@contextlib.contextmanager
def read_only_bind(source: Path, point: Path) -> Iterator[Path]:
    """``source`` bind-mounted read-only at ``point`` (root ignores chmod; a read-only mount stops
    it too); skips the test where mounts are not permitted, unmounts afterwards."""
    point.mkdir(parents=True)
    done = mount("--bind", str(source), str(point))
    if done.returncode != 0:
        pytest.skip(f"bind mounts are not permitted here: {done.stderr.strip()}")
    try:
        done = mount("-o", "remount,ro,bind", str(point))
        if done.returncode != 0:
            pytest.skip(f"read-only remounts are not permitted here: {done.stderr.strip()}")
        with pytest.raises(OSError):
            (point / "probe").write_text("x")  # read-only even for root
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)
