"""The layer file: one LLM decoder layer saved by ``mvl extract-layer`` (:mod:`.extract`, its
writer) and read by every training, evaluation and prediction job through :mod:`.factory`.

It holds the layer's tensors, keyed relative to the layer (``self_attn.q_proj.weight``), and in
its safetensors header the LLM's registry name, the layer index, the source it came from and a
content hash, ``sha256``: :func:`layer_digest` over the LLM's name, the layer index and every
tensor (name, dtype, shape, bytes). safetensors itself checks nothing, so a flipped byte in the
tensor data would load silently; :func:`read_layer_file` recomputes the hash and refuses a file
that does not match it, or that has none. A checkpoint records the hash of the layer it was trained
with (:mod:`medvisionllama.checkpoint`), so ``mvl predict`` can find that very layer anywhere.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_path, with_path

FORMAT = "medvisionllama-llm-layer"
DIGEST_KEY = "sha256"  #: header key of the content hash
REEXTRACT = "delete it and extract it again (`mvl extract-layer`, or rerun the workflow, which does)"


def layer_digest(state: dict[str, torch.Tensor], *, llm: str, layer: int) -> str:
    """Hex sha256 of one layer: the LLM's name, the layer index and each tensor (sorted by name:
    the name, dtype, shape and raw bytes). The same tensors give the same hash whatever source
    they were read from (GGUF, checkpoint folder, hub)."""
    digest = hashlib.sha256(f"{FORMAT}\0{llm}\0{int(layer)}\0".encode())
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, not copied
    return digest.hexdigest()


def check_finite_layer(state: dict[str, torch.Tensor], *, source: str, layer: int) -> None:
    """Refuse a layer holding NaN or infinite weights, naming the first such tensor and the source.

    A NaN weight of a frozen block turns every output into NaN, which training would only notice
    as a non-finite loss, long after the file was written.

    Raises:
        InputError: ``{source}: layer {layer} weight {key} holds N non-finite value(s) ...``.
    """
    for key in sorted(state):
        tensor = state[key]
        if not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            nan = int(torch.isnan(tensor).sum())
            raise InputError(
                f"{source}: layer {layer} weight {key} holds {bad} non-finite value(s) "
                f"({nan} NaN, {bad - nan} infinite) of {tensor.numel()}; the checkpoint is damaged, "
                "nothing was written"
            )


def save_layer_file(state: dict[str, torch.Tensor], output: Path, *, llm: str, layer: int, source: str) -> Path:
    """Write ``state`` (one layer's tensors), its identity and its content hash to ``output``
    atomically."""
    metadata = {"format": FORMAT, "llm": llm, "layer": str(layer), "source": source,
                DIGEST_KEY: layer_digest(state, llm=llm, layer=layer)}
    with atomic_path(output, suffix=".safetensors") as tmp:
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
        except Exception as exc:  # noqa: BLE001 - SafetensorError wraps the OS error in its message
            code = re.search(r"\(os error (\d+)\)", str(exc))
            if code is None:
                raise
            number = int(code.group(1))
            raise with_path(OSError(number, os.strerror(number)), output) from exc
    return output


def _unreadable(path: Path, exc: BaseException) -> InputError:
    return InputError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                      f"if it is a layer file, {REEXTRACT}")


def read_layer_header(path: str | Path) -> dict[str, str]:
    """The header metadata of a layer file (``format``, ``llm``, ``layer``, ``source``,
    ``sha256``) without reading its tensors.

    Raises:
        InputError: the file is missing, unreadable or not a layer file of ``mvl extract-layer``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: layer file does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors_rust.SafetensorError has no stable import path
        raise _unreadable(path, exc) from None
    if metadata.get("format") != FORMAT:
        raise InputError(f"{path}: not a layer file of `mvl extract-layer` (no '{FORMAT}' header)")
    return metadata


def layer_file_digest(path: str | Path) -> str:
    """The content hash a layer file's header records (not recomputed: :func:`read_layer_file`
    does that).

    Raises:
        InputError: as :func:`read_layer_header`, or a file without a hash.
    """
    digest = read_layer_header(path).get(DIGEST_KEY)
    if not digest:
        raise InputError(f"{path}: layer file has no {DIGEST_KEY} content hash (written by an older version), "
                         f"so it cannot be verified; {REEXTRACT}")
    return digest


def read_layer_file(path: str | Path, *, llm: str, layer: int) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a file written by :func:`save_layer_file`, and the source recorded in it.

    A file of another LLM or another layer is refused, naming both; so is a file whose tensors do
    not match the hash in its header (a flipped byte) or that has no hash.
    """
    path = Path(path)
    metadata = read_layer_header(path)
    if metadata.get("llm") != llm or metadata.get("layer") != str(layer):
        raise InputError(
            f"{path}: holds layer {metadata.get('layer')} of {metadata.get('llm')}, "
            f"but layer {layer} of {llm} was asked for"
        )
    stored = layer_file_digest(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # noqa: BLE001 - see read_layer_header
        raise _unreadable(path, exc) from None
    if layer_digest(state, llm=llm, layer=layer) != stored:
        raise InputError(f"{path}: corrupt layer file (its tensors do not match the {DIGEST_KEY} in its header); "
                         f"{REEXTRACT}")
    return state, metadata.get("source", "unknown")
