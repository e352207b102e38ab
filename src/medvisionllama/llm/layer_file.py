"""The layer file: one LLM decoder layer saved by ``mvl extract-layer`` (:mod:`.extract`, its
writer) and read by every training and evaluation job through :mod:`.factory`.

It holds the layer's tensors, keyed relative to the layer (``self_attn.q_proj.weight``), and in
its safetensors header the LLM's registry name, the layer index and the source it came from,
checked when it is read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from medvisionllama.errors import InputError
from medvisionllama.io_utils import atomic_path, with_path

FORMAT = "medvisionllama-llm-layer"


def save_layer_file(state: dict[str, torch.Tensor], output: Path, *, llm: str, layer: int, source: str) -> Path:
    """Write ``state`` (one layer's tensors) and its identity to ``output`` atomically."""
    metadata = {"format": FORMAT, "llm": llm, "layer": str(layer), "source": source}
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


def read_layer_file(path: str | Path, *, llm: str, layer: int) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a file written by :func:`save_layer_file`, and the source recorded in it.

    A file of another LLM or another layer is refused, naming both.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (OSError, ValueError, RuntimeError) as exc:  # safetensors raises SafetensorError (an Exception)
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - safetensors_rust.SafetensorError has no stable import path
        raise InputError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise InputError(f"{path}: not a layer file of `mvl extract-layer` (no '{FORMAT}' header)")
    if metadata.get("llm") != llm or metadata.get("layer") != str(layer):
        raise InputError(
            f"{path}: holds layer {metadata.get('layer')} of {metadata.get('llm')}, "
            f"but layer {layer} of {llm} was asked for"
        )
    return state, metadata.get("source", "unknown")
