"""``mvl extract-layer``: save one LLM decoder layer as a small safetensors file.

Every run that uses an LLM block needs the same one layer. Reading it from its source each time
costs seconds (parsing a GGUF file's vocabulary) to minutes (downloading shards from the hub,
which compute nodes of a cluster often cannot reach). The pipeline therefore extracts the layer
once, on the machine that runs Snakemake, into ``results/llm/{llm}.safetensors``, and every
training and evaluation job reads that file (a few MB to 0.9 GB, memory-mapped).

The file holds the layer's tensors, keyed relative to the layer (``self_attn.q_proj.weight``), in
the source's precision (bf16 for Hub checkpoints, float32 for dequantised GGUF), and in its header
the LLM's registry name, the layer index, the source it came from and a sha256 content hash,
checked when it is read (:mod:`.layer_file`). Weights that are not finite (NaN, infinite) are
refused here, naming the tensor and the source, before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medvisionllama.llm.block import FrozenLLMBlock
from medvisionllama.llm.factory import read_pretrained_layer
from medvisionllama.llm.layer_file import (  # noqa: F401  (the file's API)
    FORMAT, check_finite_layer, read_layer_file, save_layer_file,
)
from medvisionllama.llm.registry import get_spec
from medvisionllama.llm.sources import check_layer_weights


def expected_layer_shapes(llm: str, layer_index: int) -> dict[str, tuple[int, ...]]:
    """Weight name (relative to the layer) -> shape, from the state dict of the transformers
    decoder layer built from the registry entry's config on the ``meta`` device (nothing is
    allocated)."""
    spec = get_spec(llm)
    with torch.device("meta"):
        return FrozenLLMBlock(spec.make_config(), spec.family, layer_index).expected_shapes()


def extract_layer(llm: str, output: Path, *, layer: int | None = None, weights: str | None = None) -> Path:
    """Read layer ``layer`` (default: the last) of registry entry ``llm`` from ``weights`` (default:
    the entry's own source) and save it to ``output``.

    Before anything is written, the weights read are checked against
    :func:`expected_layer_shapes`: a missing, extra or mis-shaped weight is an ``InputError``
    naming the source and the keys; so is a weight holding NaN or infinite values
    (:func:`check_finite_layer`).
    """
    spec = get_spec(llm, folder=weights)  # an unknown name with a model folder registers it
    layer_index = spec.resolve_layer(layer)
    state, source = read_pretrained_layer(spec, layer_index, weights)
    check_layer_weights(state, expected_layer_shapes(spec.name, layer_index), source=source)
    check_finite_layer(state, source=source, layer=layer_index)
    return save_layer_file(state, output, llm=spec.name, layer=layer_index, source=source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mvl extract-layer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", required=True,
                        help="a preset (e.g. llama3.1-8b, smollm2-135m) or a name of yours for --weights FOLDER")
    parser.add_argument("--output", required=True, type=Path, help=".safetensors file to write")
    parser.add_argument("--layer", type=int, default=None, help="decoder layer index (default: the last)")
    parser.add_argument(
        "--weights", default=None,
        help="local Hugging Face folder (config.json + safetensors: any decoder family), .gguf file or hub id "
             "(default: the registry's source)",
    )
    args = parser.parse_args(argv)
    if "@" in args.llm:  # the layer-file key of the pipeline, <llm>@<layer> (vocabulary.ModelName.layer_llm)
        llm, _, layer = args.llm.partition("@")
        if args.layer is not None and str(args.layer) != layer:
            parser.error(f"--llm {args.llm} names layer {layer}, --layer {args.layer} another")
        if not layer.isdigit():
            parser.error(f"--llm {args.llm}: the layer after @ must be a non-negative integer")
        args.llm, args.layer = llm, int(layer)
    print(extract_layer(llm=args.llm, output=args.output, layer=args.layer, weights=args.weights))
    return 0
