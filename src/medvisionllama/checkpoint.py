"""Checkpoints: atomic save, checked load, RNG state capture and restore.

A checkpoint (``checkpoint_last.pt`` / ``checkpoint_best.pt``) is a ``torch.save`` dict:

==================  ==========================================================================
key                 value
==================  ==========================================================================
format              :data:`CHECKPOINT_FORMAT`
model_config        ``ModelConfig.to_dict()``: rebuilds the model (frozen LLM block from its
                    source; a ``-random`` block from ``seed``)
training            resolved training settings (lr, batch size, epochs, augment, seed, ...)
data                what inference needs to preprocess a new image like the training data:
                    task, size, kind (CT/MRI), num_channels, class names, preprocessed folder
model_state         ``model.trainable_state_dict()`` (the frozen block is not stored)
optimizer_state     ``optimizer.state_dict()``
epoch               number of completed epochs
best_metric         best validation Dice so far, ``best_epoch`` its epoch
history             the rows of ``history.csv`` up to ``epoch``
rng                 torch, CUDA, NumPy, Python and DataLoader-generator states after ``epoch``
seed, version       run seed and package version
==================  ==========================================================================

It holds only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_path

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "model_config", "training", "data", "model_state", "epoch", "seed", "version")


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The state of every RNG a training epoch draws from."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np.asarray(np_state["state"]["key"]).astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": random.getstate(),
        "generator": generator.get_state() if generator is not None else None,
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore the states captured by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path, suffix=".pt.tmp") as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint.

    Raises:
        InputError: ``{path}: missing``, ``{path}: corrupt or unreadable checkpoint (...)``, or
            ``{path}: not a medvisionllama checkpoint (missing keys ...)``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path}: not a medvisionllama checkpoint (a {type(checkpoint).__name__}, expected a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise InputError(f"{path}: not a medvisionllama checkpoint (missing keys {', '.join(missing)})")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: checkpoint format {checkpoint['format']!r}, this version reads {CHECKPOINT_FORMAT}")
    return checkpoint


def differing_fields(stored: dict[str, Any], requested: dict[str, Any], prefix: str = "") -> list[str]:
    """``["name: stored -> requested", ...]`` for every key whose values differ (missing = None)."""
    out = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key), requested.get(key)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            out.append(f"{prefix}{key}: {a!r} in checkpoint, {b!r} requested")
    return out
