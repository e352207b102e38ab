"""V_LLM adapter: non-causal, position-free, frozen, for each LLM family (tiny random configs)."""

from __future__ import annotations

import pytest
import torch

from medvisionllama.errors import InputError
from medvisionllama.llm import LLM_REGISTRY, FrozenLLMBlock, build_frozen_block

#: one registry entry per family; its tiny config keeps the family's config class and quirks
FAMILIES = {"llama": "llama3.1-8b", "gemma2": "gemma2-9b", "mistral": "mistral-7b", "qwen2": "qwen2-7b"}


def tiny_config(llm_name: str):
    """The registry entry's config class with tiny sizes; Gemma-2's soft-capping and every sliding
    window (2 tokens, shorter than the test sequences) are kept, so neither may leak in."""
    real = LLM_REGISTRY[llm_name].make_config()
    extra = {}
    if hasattr(real, "attn_logit_softcapping"):
        extra.update(attn_logit_softcapping=real.attn_logit_softcapping, query_pre_attn_scalar=8)
    if getattr(real, "sliding_window", None) is not None:
        extra.update(sliding_window=2)
    return type(real)(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, rms_norm_eps=real.rms_norm_eps, vocab_size=16, **extra,
    )


def tiny_block(family: str, layer_index: int = 1) -> FrozenLLMBlock:
    llm_name = FAMILIES[family]
    block = FrozenLLMBlock(tiny_config(llm_name), family, layer_index)
    block.init_random(seed=3, initializer_range=0.2)  # large weights: attention far from uniform
    return block


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_block_is_non_causal(family):
    block = tiny_block(family)
    x = torch.randn(2, 6, 32)
    y = block(x)
    x2 = x.clone()
    x2[:, -1] += 3.0  # change the last token only
    y2 = block(x2)
    assert y.shape == x.shape
    assert not torch.allclose(y[:, 0], y2[:, 0], atol=1e-5), "the first token must see the last one"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_block_has_no_positions(family):
    block = tiny_block(family)
    x = torch.randn(1, 7, 32)
    perm = torch.randperm(7)
    torch.testing.assert_close(block(x)[:, perm], block(x[:, perm]), rtol=1e-4, atol=1e-5)


def test_plain_transformers_layer_would_be_causal():
    """Guards the test above: called the default way, transformers' sdpa path is causal."""
    block = tiny_block("llama")
    layer = block.layer
    for module in layer.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = True
    x = torch.randn(1, 6, 32)
    cos, sin = torch.ones(1, 6, 8), torch.zeros(1, 6, 8)
    x2 = x.clone()
    x2[:, -1] += 3.0
    y, y2 = layer(x, position_embeddings=(cos, sin)), layer(x2, position_embeddings=(cos, sin))
    torch.testing.assert_close(y[:, 0], y2[:, 0])


def test_block_is_frozen_in_eval_and_casts_dtype():
    block = tiny_block("qwen2").to(torch.bfloat16)
    block.train()
    assert not block.layer.training
    assert all(not p.requires_grad for p in block.parameters())
    x = torch.randn(1, 4, 32, requires_grad=True)
    y = block(x)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients pass through to V_L1


def test_gemma2_refuses_sdpa_and_bad_family():
    with pytest.raises(ValueError, match="soft-cap"):
        FrozenLLMBlock(tiny_config("gemma2-9b"), "gemma2", 0, attn_implementation="sdpa")
    with pytest.raises(ValueError, match="'gpt2'"):
        FrozenLLMBlock(tiny_config("llama3.1-8b"), "gpt2", 0)


def test_random_control_is_deterministic_and_registry_names():
    first = build_frozen_block("smollm2-135m", pretrained=False, layer=3)
    second = build_frozen_block("smollm2-135m", pretrained=False, layer=3)
    assert first.source == "random" and first.layer_index == 3
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), k
    assert build_frozen_block("smollm2-135m", pretrained=False).layer_index == 29  # default: last layer
    with pytest.raises(InputError, match="unknown LLM 'foo'"):
        build_frozen_block("foo")
    with pytest.raises(InputError, match="llm_layer 30 is out of range"):
        build_frozen_block("smollm2-135m", layer=30, device="meta")


def test_registry_configs():
    expected = {  # hidden, intermediate, heads, kv heads, head_dim, layers
        "llama3.1-8b": (4096, 14336, 32, 8, 128, 32),
        "gemma2-9b": (3584, 14336, 16, 8, 256, 42),
        "mistral-7b": (4096, 14336, 32, 8, 128, 32),
        "qwen2-7b": (3584, 18944, 28, 4, 128, 28),
        "yi1.5-9b": (4096, 11008, 32, 4, 128, 48),
        "smollm2-135m": (576, 1536, 9, 3, 64, 30),
    }
    for name, numbers in expected.items():
        c = LLM_REGISTRY[name].make_config()
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        got = (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, head_dim, c.num_hidden_layers)
        assert got == numbers, name
    gemma = LLM_REGISTRY["gemma2-9b"].make_config()
    assert (gemma.attn_logit_softcapping, gemma.query_pre_attn_scalar, gemma.sliding_window) == (50.0, 256, 4096)
    qwen = build_frozen_block("qwen2-7b", device="meta").layer.self_attn
    assert qwen.q_proj.bias is not None and qwen.o_proj.bias is None
