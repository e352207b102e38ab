"""``mvl extract-layer``: save one LLM decoder layer as a small safetensors file.

Every run that uses an LLM block needs the same one layer. Reading it from its source each time
costs seconds (parsing a GGUF file's vocabulary) to minutes (downloading shards from the hub,
which compute nodes of a cluster often cannot reach). The pipeline therefore extracts the layer
once, on the machine that runs Snakemake, into ``results/llm/{llm}.safetensors``, and every
training and evaluation job reads that file (a few MB to 0.9 GB, memory-mapped).

The file holds the layer's tensors, keyed relative to the layer (``self_attn.q_proj.weight``), in
the source's precision (bf16 for Hub checkpoints, float32 for dequantised GGUF), and in its header
the LLM's registry name, the layer index and the source it came from, checked when it is read.
"""

from __future__ import annotations

import argparse
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


def expected_layer_shapes(llm: str, layer_index: int) -> dict[str, tuple[int, ...]]:
    """Weight name (relative to the layer) -> shape, from the state dict of the transformers
    decoder layer built from the registry entry's config on the ``meta`` device (nothing is
    allocated)."""
    from medvisionllama.llm.block import FrozenLLMBlock
    from medvisionllama.llm.registry import get_spec

    spec = get_spec(llm)
    with torch.device("meta"):
        return FrozenLLMBlock(spec.make_config(), spec.family, layer_index).expected_shapes()


def extract_layer(llm: str, output: Path, *, layer: int | None = None, weights: str | None = None) -> Path:
    """Read layer ``layer`` (default: the last) of registry entry ``llm`` from ``weights`` (default:
    the entry's own source) and save it to ``output``.

    Before anything is written, the weights read are checked against
    :func:`expected_layer_shapes`: a missing, extra or mis-shaped weight is an ``InputError``
    naming the source and the keys.
    """
    from medvisionllama.llm.factory import read_pretrained_layer
    from medvisionllama.llm.registry import get_spec
    from medvisionllama.llm.sources import check_layer_weights

    spec = get_spec(llm)
    layer_index = spec.resolve_layer(layer)
    state, source = read_pretrained_layer(spec, layer_index, weights)
    check_layer_weights(state, expected_layer_shapes(spec.name, layer_index), source=source)
    return save_layer_file(state, output, llm=spec.name, layer=layer_index, source=source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl extract-layer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", required=True, help="registry name, e.g. llama3.1-8b or smollm2-135m")
    parser.add_argument("--output", required=True, type=Path, help=".safetensors file to write")
    parser.add_argument("--layer", type=int, default=None, help="decoder layer index (default: the last)")
    parser.add_argument(
        "--weights", default=None,
        help="local checkpoint folder, .gguf file or hub id (default: the registry's source)",
    )
    args = parser.parse_args(argv)
    print(extract_layer(llm=args.llm, output=args.output, layer=args.layer, weights=args.weights))
    return 0
