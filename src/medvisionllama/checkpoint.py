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
llm_layer           for a model that reads a layer file of ``mvl extract-layer``: ``{"sha256"
                    (the file's content hash), "path" (as the run was given it), "absolute",
                    "from_run" (relative to the checkpoint's folder)}``, added by
                    :func:`save_checkpoint` (:func:`llm_layer_record`); ``mvl predict`` finds the
                    layer by it from any folder (:func:`medvisionllama.runtime.locate_llm_layer`)
checksum            ``{"algorithm": "sha256", "digest": ...}`` over every other key's content
                    (:func:`content_digest`), added by :func:`save_checkpoint`
==================  ==========================================================================

It holds only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``.
``torch.load`` does not check the CRCs of its zip container, so bytes flipped inside tensor data
load silently; :func:`load_checkpoint` therefore recomputes the checksum and refuses a mismatch.
A checkpoint without a checksum (format 1, written before checksums) is refused: it cannot be
verified, and the message says to delete it (training then starts again).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_path, with_path

CHECKPOINT_FORMAT = 2  #: 2: with ``checksum``; 1 (no checksum) is refused
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


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` (tensors and plain Python values, nested) to ``digest``, tagged by type."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, not copied
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):  # a tuple may come back as a list, and vice versa
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:  # str, int, float, bool, None: repr is exact (floats round-trip)
        digest.update(f"V{type(value).__name__}:{value!r};".encode())


def content_digest(checkpoint: dict[str, Any]) -> str:
    """Hex sha256 over every key of ``checkpoint`` but ``checksum``: tensors by dtype, shape and
    bytes, other values by type and ``repr``, dict keys sorted, so it is the same before saving
    and after loading."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in checkpoint.items() if k != "checksum"})
    return digest.hexdigest()


class _WriteRecorder:
    """A binary file for ``torch.save`` that remembers an ``OSError`` of ``write``: torch turns
    it into a ``RuntimeError`` that no longer says "no space left on device"."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def llm_layer_record(model_config: dict[str, Any], checkpoint_path: str | Path) -> dict[str, str] | None:
    """Where the layer file of ``model_config`` is and its content hash (the ``llm_layer`` key);
    ``None`` for a model that reads no layer file (``vit``, ``mlp``, ``-random``, or weights read
    from a GGUF file, a checkpoint folder or the hub)."""
    from medvisionllama.vocabulary import parse_model_name

    weights = model_config.get("llm_weights")
    if not weights or not str(weights).endswith(".safetensors") or not Path(weights).is_file():
        return None
    try:
        if parse_model_name(str(model_config.get("model"))).layer_llm is None:
            return None
    except InputError:
        return None
    from medvisionllama.llm.layer_file import layer_file_digest

    absolute = Path(weights).resolve()
    return {
        "sha256": layer_file_digest(absolute), "path": str(weights), "absolute": str(absolute),
        "from_run": os.path.relpath(absolute, Path(checkpoint_path).resolve().parent),
    }


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` with its ``checksum`` (and, for a model that reads a layer file, its
    ``llm_layer`` record) to ``path`` atomically (temporary file, then rename). A failed write (a
    full disk) raises the ``OSError``, naming ``path``."""
    payload = {k: v for k, v in checkpoint.items() if k != "checksum"}
    if "llm_layer" not in payload and isinstance(payload.get("model_config"), dict):
        record = llm_layer_record(payload["model_config"], path)
        if record is not None:
            payload["llm_layer"] = record
    payload["checksum"] = {"algorithm": "sha256", "digest": content_digest(payload)}
    with atomic_path(path, suffix=".pt.tmp") as tmp:
        with open(tmp, "wb") as handle:
            recorder = _WriteRecorder(handle)
            try:
                torch.save(payload, recorder)
            except RuntimeError as exc:
                if recorder.error is not None:
                    raise with_path(recorder.error, path) from exc
                raise


def _load_error(exc: BaseException) -> str:
    """A one-line reason from a ``torch.load`` failure, without torch's advice to load unsafely."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    if "weights_only" in first or "Weights only" in first or not first:
        first = "not a checkpoint that loads safely (weights only)"
    return f"{type(exc).__name__}: {first[:200]}"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint.

    Raises:
        InputError: ``{path}: missing``, ``{path}: corrupt or unreadable checkpoint (...)``,
            ``{path}: not a medvisionllama checkpoint (missing keys ...)``, an old format without
            a checksum, or a checksum that does not match the content.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - on damaged bytes torch fails in many ways (UnpicklingError,
        # BadZipFile, RuntimeError, EOFError, even IndexError); all mean an unreadable file
        raise InputError(f"{path}: corrupt or unreadable checkpoint ({_load_error(exc)})") from None
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path}: not a medvisionllama checkpoint (a {type(checkpoint).__name__}, expected a dict)")
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise InputError(f"{path}: not a medvisionllama checkpoint (missing keys {', '.join(missing)})")
    if checkpoint["format"] == 1:
        raise InputError(
            f"{path}: checkpoint format 1 has no content checksum, so it cannot be verified; "
            "delete it to train this run again"
        )
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: checkpoint format {checkpoint['format']!r}, this version reads {CHECKPOINT_FORMAT}")
    stored = checkpoint.get("checksum")
    if not isinstance(stored, dict) or stored.get("algorithm") != "sha256":
        raise InputError(f"{path}: checkpoint has no sha256 content checksum, so it cannot be verified")
    if content_digest(checkpoint) != stored.get("digest"):
        raise InputError(
            f"{path}: corrupt checkpoint (its content does not match the sha256 stored in it); "
            "restore it from a copy or delete it to train again"
        )
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
