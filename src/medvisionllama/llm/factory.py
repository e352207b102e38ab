"""Build V_LLM for a registry entry: choose the weights' source, load one layer, freeze it.

Sources, in the order they are recognised from ``weights`` (``ModelConfig.llm_weights``):

- ``None``: the entry's default: its folder (an LLM of the config's ``llms:``), else its packaged
  GGUF file if it has one (SmolLM2), else its hub id.
- a path ending in ``.gguf``: a GGUF file (``llm.gguf_source``).
- a directory: a local Hugging Face checkpoint with (sharded) safetensors (``llm.sources``).
- a ``.safetensors`` file: one layer saved by ``mvl extract-layer`` (``llm.layer_file``); what the
  pipeline's jobs read, so the source itself is read once.
- ``owner/name`` that is not a local path: a hub id; only the index and the shards holding the
  layer are downloaded.

Controls (``vocabulary.CONTROLS``): ``control="random"`` (the ``<llm>-random`` control) or
``load_weights=False`` gives Gaussian random weights (the layer's ``initializer_range``),
deterministic in the entry's name and layer; ``control="shuffled"`` (``<llm>-shuffled``) reads the
pretrained layer and permutes every tensor's entries (:func:`medvisionllama.llm.controls.shuffle_layer_state_dict`,
seeded the same way): the same per-tensor values, mean, std and norm, so the same output scale,
without the learned arrangement. Either way a checkpoint that leaves out the frozen block can
rebuild it. On the ``meta`` device nothing is allocated or read (parameter counts).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal

import torch

from medvisionllama.errors import InputError
from medvisionllama.llm.block import FrozenLLMBlock, decoder_layer_class, layers_prefix
from medvisionllama.llm.controls import shuffle_layer_state_dict
from medvisionllama.llm.gguf_source import packaged_gguf_path, read_layer_from_gguf
from medvisionllama.llm.layer_file import read_layer_file
from medvisionllama.llm.registry import LLMSpec, get_spec
from medvisionllama.llm.sources import read_layer_from_directory, read_layer_from_hub

SourceKind = Literal["gguf", "directory", "hub", "layer-file"]


def resolve_weights_source(spec: LLMSpec, weights: str | None) -> tuple[SourceKind, str]:
    """``(kind, location)`` of the weights for ``spec``; see the module docstring for the rules."""
    if weights is None:
        if spec.folder is not None:
            return "directory", spec.folder
        if spec.gguf_package is not None:
            return "gguf", str(packaged_gguf_path(spec))
        return "hub", spec.hf_id
    path = Path(weights).expanduser()
    if path.is_dir():
        return "directory", str(path)
    if path.is_file():
        if path.suffix.lower() == ".safetensors":
            return "layer-file", str(path)
        if path.suffix.lower() != ".gguf":
            raise InputError(
                f"llm_weights {weights!r} is a file but neither a .gguf file nor a layer file of "
                "`mvl extract-layer` (.safetensors); for a checkpoint, give its directory"
            )
        return "gguf", str(path)
    looks_like_hub_id = weights.count("/") == 1 and not weights.startswith((".", "/", "~")) and not weights.endswith(".gguf")
    if looks_like_hub_id:
        return "hub", weights
    raise InputError(f"llm_weights {weights!r}: no such file or directory (and not a hub id 'owner/name')")


def check_family(spec: LLMSpec) -> None:
    """``InputError`` in one line naming the LLM, its folder and its family when the family has no
    decoder layer that can run as V_LLM (non-causal, without positions; ``llm.block``)."""
    try:
        decoder_layer_class(spec.family)
    except ValueError as exc:
        raise InputError(f"LLM {spec.name} ({spec.folder or spec.hf_id}): {exc}") from None


def default_dtype(device: torch.device | str | None) -> torch.dtype:
    """bf16 on CUDA, float32 elsewhere (the frozen block's compute dtype)."""
    return torch.bfloat16 if torch.device(device or "cpu").type == "cuda" else torch.float32


def read_pretrained_layer(
    spec: LLMSpec, layer_index: int, weights: str | None
) -> tuple[dict[str, torch.Tensor], str]:
    """Layer ``layer_index`` of ``spec`` from its source (see the module docstring): the tensors,
    keyed relative to the layer, and a description of where they came from."""
    check_family(spec)
    kind, location = resolve_weights_source(spec, weights)
    if kind == "layer-file":
        state, origin = read_layer_file(location, llm=spec.name, layer=layer_index)
        return state, f"layer-file:{location} (from {origin})"
    if kind == "gguf":
        with torch.device("meta"):
            expected = FrozenLLMBlock(spec.make_config(), spec.family, layer_index).expected_shapes()
        return read_layer_from_gguf(location, spec, layer_index, expected), f"gguf:{location}"
    layers = layers_prefix(spec.make_config(), spec.family)  # model.layers., gpt_neox.layers., ...
    if kind == "directory":
        return read_layer_from_directory(location, layer_index, layers), f"directory:{location}"
    return read_layer_from_hub(location, layer_index, layers=layers), f"hub:{location}"


def random_seed(llm_name: str, layer_index: int) -> int:
    """A fixed seed per (LLM, layer) for a control's weights (Gaussian draw or permutation)."""
    return zlib.crc32(f"{llm_name}:{layer_index}".encode())


def build_frozen_block(
    llm_name: str,
    *,
    control: str | None = None,
    layer: int | None = None,
    weights: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    load_weights: bool = True,
    attn_implementation: str | None = None,
) -> FrozenLLMBlock:
    """V_LLM for registry entry ``llm_name``: one decoder layer, frozen, on ``device`` in ``dtype``.

    ``control``: None (the pretrained layer), ``"random"`` or ``"shuffled"`` (module docstring).
    Peak memory is about one layer: the layer is built on ``meta`` and takes the loaded tensors
    by assignment.
    """
    if control not in (None, "random", "shuffled"):
        raise InputError(f"unknown control {control!r} of {llm_name}: expected random or shuffled")
    spec = get_spec(llm_name, folder=weights)  # an unknown name with a model folder registers it
    layer_index = spec.resolve_layer(layer)
    check_family(spec)
    device = torch.device(device or "cpu")
    dtype = dtype or default_dtype(device)
    with torch.device("meta"):
        block = FrozenLLMBlock(spec.make_config(), spec.family, layer_index, attn_implementation)
    block.to(dtype)
    if device.type == "meta":
        return block
    if control != "random" and load_weights:
        state, source = read_pretrained_layer(spec, layer_index, weights)
        if control == "shuffled":
            seed = random_seed(spec.name, layer_index)
            state, source = shuffle_layer_state_dict(state, seed), f"shuffled(seed={seed}):{source}"
        block.load_layer_state_dict(state)
        block.source = source
    else:
        block.init_random(random_seed(spec.name, layer_index), spec.make_config().initializer_range)
        block.to(dtype)
        block.source = "random"
    return block.to(device)
