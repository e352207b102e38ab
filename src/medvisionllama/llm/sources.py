"""Read the weights of ONE decoder layer from a sharded safetensors checkpoint (local or hub).

A Hugging Face checkpoint of a 7-9 B model is 15-18 GB in 4-8 shards; one decoder layer is 0.4-0.5
GB (bf16) and lies in one or two shards. We read ``model.safetensors.index.json`` (or take the
single ``model.safetensors``), open only the shards that hold ``{layers}{i}.*`` (``layers``: the
family's prefix from ``llm.block.layers_prefix``, ``model.layers.`` for Llama-like models,
``gpt_neox.layers.`` for GPT-NeoX) with
safetensors' lazy ``safe_open`` (memory-mapped; a tensor is read when asked for), and read only
that layer's tensors. The full model is never built: peak memory is about one layer.

The hub path downloads the index and the needed shards only (``huggingface_hub.hf_hub_download``),
then reads them like a local directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from medvisionllama.errors import InputError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

#: filename inside the checkpoint -> local path of that file (downloads it if need be).
Fetch = Callable[[str], Path]


#: where Llama-like causal LMs keep their decoder layers (the default of every reader here)
DEFAULT_LAYERS = "model.layers."


def layer_prefix(layer_index: int, layers: str = DEFAULT_LAYERS) -> str:
    """Prefix of decoder layer ``layer_index``'s weights in a causal-LM checkpoint whose layers
    sit under ``layers``."""
    return f"{layers}{layer_index}."


def check_layer_weights(
    weights: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str
) -> None:
    """Raise ``InputError`` naming the key if ``weights`` lacks, adds or mis-shapes any weight."""
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise InputError(f"{source}: missing weight(s) for the LLM layer: {', '.join(missing)}")
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise InputError(f"{source}: unexpected weight(s) for the LLM layer: {', '.join(unexpected)}")
    for key, shape in expected.items():
        if tuple(weights[key].shape) != tuple(shape):
            raise InputError(
                f"{source}: weight {key!r} has shape {tuple(weights[key].shape)}, expected {tuple(shape)}"
            )


def _read_weight_map(index_path: Path, source: str) -> dict[str, str]:
    """The ``weight_map`` of a checkpoint's index (tensor name -> shard file); ``InputError`` when
    the index is not valid JSON or has no such map."""
    try:
        weight_map = json.loads(index_path.read_text()).get("weight_map")
    except (ValueError, AttributeError) as exc:
        raise InputError(f"{source}: {INDEX_FILE} is not a valid index ({exc})") from None
    if not isinstance(weight_map, dict):
        raise InputError(f"{source}: {INDEX_FILE} has no 'weight_map' object")
    return weight_map


def _fetch_shard(fetch: Fetch, shard: str, source: str) -> Path:
    """The local path of ``shard``; ``InputError`` naming the index and the shard when it is absent."""
    try:
        return fetch(shard)
    except FileNotFoundError:
        raise InputError(f"{source}: {INDEX_FILE} lists shard {shard!r}, which is missing") from None


def _shards_for_layer(fetch: Fetch, prefix: str, source: str) -> dict[str, list[str]]:
    """shard filename -> full tensor names under ``prefix``, from the index (or the single file)."""
    try:
        index_path = fetch(INDEX_FILE)
    except FileNotFoundError:
        index_path = None
    if index_path is not None:
        weight_map = _read_weight_map(Path(index_path), source)
        shards: dict[str, list[str]] = {}
        for name, shard in weight_map.items():
            if name.startswith(prefix):
                shards.setdefault(shard, []).append(name)
        return shards
    try:
        single = fetch(SINGLE_FILE)
    except FileNotFoundError:
        raise InputError(f"{source}: neither {INDEX_FILE} nor {SINGLE_FILE} found") from None
    with safe_open(str(single), framework="pt") as f:
        return {SINGLE_FILE: [name for name in f.keys() if name.startswith(prefix)]}


def read_layer(fetch: Fetch, layer_index: int, source: str, layers: str = DEFAULT_LAYERS) -> dict[str, torch.Tensor]:
    """Tensors of decoder layer ``layer_index``, keyed relative to the layer
    (``self_attn.q_proj.weight``), read from only the shards that hold them."""
    prefix = layer_prefix(layer_index, layers)
    shards = _shards_for_layer(fetch, prefix, source)
    if not any(shards.values()):
        raise InputError(f"{source}: no weights named {prefix}* (is layer {layer_index} in this checkpoint?)")
    weights: dict[str, torch.Tensor] = {}
    for shard, names in sorted(shards.items()):
        path = _fetch_shard(fetch, shard, source)
        try:
            with safe_open(str(path), framework="pt") as f:  # lazy: only the named tensors are read
                available = set(f.keys())
                for name in names:
                    if name not in available:
                        raise InputError(f"{source}: index lists {name!r} in {shard}, which lacks it")
                    weights[name[len(prefix):]] = f.get_tensor(name)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError has no stable import path
            raise InputError(f"{source}: shard {shard} is not a readable safetensors file ({exc})") from None
    return weights


def read_layer_from_directory(
    directory: str | os.PathLike[str], layer_index: int, layers: str = DEFAULT_LAYERS
) -> dict[str, torch.Tensor]:
    """One layer's weights from a local Hugging Face checkpoint directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"LLM checkpoint directory {str(directory)!r} does not exist")

    def fetch(filename: str) -> Path:
        path = directory / filename
        if not path.is_file():
            raise FileNotFoundError(path)
        return path

    return read_layer(fetch, layer_index, source=str(directory), layers=layers)


def read_layer_from_hub(
    repo_id: str, layer_index: int, revision: str | None = None, layers: str = DEFAULT_LAYERS
) -> dict[str, torch.Tensor]:
    """One layer's weights from the Hugging Face hub: downloads the index and the needed shards only."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    def fetch(filename: str) -> Path:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision))
        except EntryNotFoundError as exc:
            raise FileNotFoundError(filename) from exc

    return read_layer(fetch, layer_index, source=f"hub:{repo_id}", layers=layers)
