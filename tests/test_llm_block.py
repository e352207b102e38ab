"""V_LLM adapter: non-causal, position-free, frozen, for each LLM family (tiny random configs)."""

from __future__ import annotations

import math

import pytest
import torch

from medvisionllama.errors import InputError
from medvisionllama.llm import LLM_REGISTRY, FrozenLLMBlock, build_frozen_block
from medvisionllama.llm.attention_kernels import ATTENTION_NAME

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


def tiny_block(family: str, layer_index: int = 1, **kwargs) -> FrozenLLMBlock:
    llm_name = FAMILIES[family]
    block = FrozenLLMBlock(tiny_config(llm_name), family, layer_index, **kwargs)
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
    """Guards the tests above: called the default way, transformers' sdpa path is causal."""
    block = tiny_block("llama", attn_implementation="sdpa")
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
    with pytest.raises(ValueError, match="query_chunk_size must be >= 1"):
        FrozenLLMBlock(tiny_config("gemma2-9b"), "gemma2", 0, query_chunk_size=0)
    with pytest.raises(ValueError, match="soft-cap"):
        FrozenLLMBlock(tiny_config("gemma2-9b"), "gemma2", 0, attn_implementation="sdpa")
    with pytest.raises(ValueError, match="'gpt2'"):
        FrozenLLMBlock(tiny_config("llama3.1-8b"), "gpt2", 0)


def test_random_control_is_deterministic_and_registry_names():
    first = build_frozen_block("smollm2-135m", control="random", layer=3)
    second = build_frozen_block("smollm2-135m", control="random", layer=3)
    assert first.source == "random" and first.layer_index == 3
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), k
    assert build_frozen_block("smollm2-135m", control="random").layer_index == 29  # default: last layer
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


# ------------------------------------------------------------------ the memory-efficient attention
def gqa_config(llm_name: str, sliding_window: int | None = None):
    """The registry entry's config class, tiny, with the real model's query/key-value head ratio
    (Qwen2: 7, Yi: 8, SmolLM2: 3, ...) and two key/value heads, so grouped heads are exercised."""
    real = LLM_REGISTRY[llm_name].make_config()
    groups = real.num_attention_heads // real.num_key_value_heads
    heads, head_dim = 2 * groups, 8
    extra = {}
    if hasattr(real, "attn_logit_softcapping"):
        # a small cap next to large weights: tanh saturates, so a missing cap would show
        extra.update(attn_logit_softcapping=2.0, query_pre_attn_scalar=head_dim)
    if sliding_window is not None and getattr(real, "sliding_window", None) is not None:
        extra.update(sliding_window=sliding_window)
    return type(real)(
        hidden_size=heads * head_dim, intermediate_size=48, num_hidden_layers=2, num_attention_heads=heads,
        num_key_value_heads=2, head_dim=head_dim, rms_norm_eps=real.rms_norm_eps, vocab_size=16, **extra,
    )


def twin_blocks(llm_name: str, backend: str, layer_index: int = 0, **kwargs) -> tuple[FrozenLLMBlock, FrozenLLMBlock]:
    """(ours, reference) with identical random weights; layer 0 is a sliding layer of Gemma-2."""
    family = LLM_REGISTRY[llm_name].family
    ours = FrozenLLMBlock(gqa_config(llm_name, sliding_window=3), family, layer_index, **kwargs)
    reference = FrozenLLMBlock(gqa_config(llm_name, sliding_window=3), family, layer_index, attn_implementation=backend)
    for block in (ours, reference):
        block.init_random(seed=5, initializer_range=0.3)
    return ours, reference


REFERENCES = [(name, backend) for name in LLM_REGISTRY for backend in ("eager", "sdpa")
              if not (backend == "sdpa" and LLM_REGISTRY[name].family == "gemma2")]


@pytest.mark.parametrize("llm_name,backend", REFERENCES)
def test_memory_efficient_attention_equals_transformers(llm_name, backend):
    """Our default backend computes what transformers' eager/sdpa compute with no mask and
    is_causal=False (outputs and input gradients, float32), sliding layer or not; for Gemma-2
    the chunked path is taken with a chunk (5) that divides neither T (37) nor R·T."""
    ours, reference = twin_blocks(llm_name, backend, query_chunk_size=5)
    assert ours.attn_implementation == ATTENTION_NAME
    assert ours.layer.self_attn.config._attn_implementation == ATTENTION_NAME
    x = torch.randn(2, 37, ours.hidden_size, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = ours(x), reference(x_ref)
    # float32 rounding grows with magnitude: outputs reach ~10 with these large weights
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5 * max(1.0, float(y_ref.detach().abs().max())))
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    (y_ref * weights).sum().backward()
    scale = float(x_ref.grad.abs().max())  # gradients are large with these weights: compare relative to them
    assert scale > 0
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5 * scale)


def test_gemma2_softcap_matters_and_last_layer_is_global():
    """The reference comparison above can fail: without the cap the output differs. And the
    layer the paper takes (Gemma-2-9B's last) is a full-attention layer in its config."""
    ours, _ = twin_blocks("gemma2-9b", "eager", query_chunk_size=4)
    uncapped = FrozenLLMBlock(gqa_config("gemma2-9b"), "gemma2", 0)
    uncapped.load_layer_state_dict(ours.layer.state_dict())
    uncapped.layer.self_attn.attn_logit_softcapping = None  # -> the SDPA branch, no cap
    x = torch.randn(1, 16, ours.hidden_size)
    assert (ours(x) - uncapped(x)).abs().max() > 1e-3
    real = LLM_REGISTRY["gemma2-9b"].make_config()
    assert real.layer_types[LLM_REGISTRY["gemma2-9b"].resolve_layer(None)] == "full_attention"
    assert real.layer_types[0] == "sliding_attention"  # the test above covers such a layer too


def test_chunked_attention_never_builds_a_full_score_matrix():
    """Forward and backward of the chunked path: no op produces a (.., T, T) tensor, chunk-sized
    (.., R·chunk, T) scores do appear, and autograd keeps no chunk's scores (checkpointing)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from medvisionllama.llm.attention_kernels import chunked_softcap_attention

    batch, heads, kv_heads, tokens, head_dim, chunk = 2, 4, 2, 64, 8, 8
    full = batch * heads * tokens * tokens

    class Shapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes: list[tuple[int, ...]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    self.shapes.append(tuple(t.shape))
            return out

    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    q = torch.randn(batch, heads, tokens, head_dim, requires_grad=True)
    k = torch.randn(batch, kv_heads, tokens, head_dim, requires_grad=True)
    v = torch.randn(batch, kv_heads, tokens, head_dim, requires_grad=True)
    mode = Shapes()
    with mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = chunked_softcap_attention(q, k, v, scaling=0.3, softcap=2.0, chunk_size=chunk)
        out.sum().backward()
    assert out.shape == (batch, heads, tokens, head_dim)
    numels = [math.prod(s) for s in mode.shapes]
    assert max(numels) <= full // (tokens // chunk), f"a tensor of {max(numels)} elements (full scores: {full})"
    assert (batch, kv_heads, (heads // kv_heads) * chunk, tokens) in mode.shapes  # one chunk's scores
    # q, k and v (32 KiB here); without checkpointing every chunk's float32 weights (>= 128 KiB)
    assert sum(saved.values()) < full * 4 // 2, f"autograd kept {sum(saved.values())} bytes"
    assert q.grad is not None and k.grad is not None and v.grad is not None


def test_attention_function_refuses_a_mask_and_sizes_chunks():
    from medvisionllama.llm.attention_kernels import noncausal_attention_forward, query_chunk_size

    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="mask-free"):
        noncausal_attention_forward(torch.nn.Module(), q, q, q, torch.zeros(1, 1, 4, 4))
    assert query_chunk_size(4, 16, 17_000) == 2**27 // (4 * 16 * 17_000)  # 123 queries: ~0.5 GiB fp32
    assert query_chunk_size(1, 1, 10) == 10 and query_chunk_size(64, 64, 2**20, budget=1) == 1


@pytest.mark.parametrize("softcap", [None, 2.0], ids=["sdpa", "chunked"])
def test_attention_dropout_only_while_training(softcap):
    """Dropout p=0.5 is applied when the attention module trains and ignored in eval mode (the
    frozen block keeps its layer in eval mode, so it never drops)."""
    from medvisionllama.llm.attention_kernels import noncausal_attention_forward

    q, k = torch.randn(1, 4, 12, 8), torch.randn(1, 2, 12, 8)
    module = torch.nn.Module()

    def attend():
        return noncausal_attention_forward(module, q, k, k, None, dropout=0.5, softcap=softcap, query_chunk_size=5)[0]

    module.eval()
    torch.testing.assert_close(attend(), attend())
    module.train()
    assert not torch.allclose(attend(), attend())


def test_presets_are_config_json_values_and_their_families_resolve():
    """One source: each preset is its config.json numbers; family = model_type; the layer class
    comes from transformers' own causal LM of that type (no family table)."""
    from medvisionllama.llm.block import decoder_layer_class, layers_prefix
    from medvisionllama.llm.registry import PRESET_CONFIGS, PRESETS, llm_dims

    assert set(PRESETS) == set(PRESET_CONFIGS) == {"llama3.1-8b", "gemma2-9b", "mistral-7b", "qwen2-7b", "yi1.5-9b",
                                                    "smollm2-135m"}
    for name in PRESETS:
        spec = LLM_REGISTRY[name]
        config = spec.make_config()
        assert spec.family == config.model_type == PRESET_CONFIGS[name]["model_type"]
        assert decoder_layer_class(spec.family).__name__.endswith("DecoderLayer")
        assert llm_dims(name)["num_hidden_layers"] == config.num_hidden_layers == spec.num_layers
    assert layers_prefix(tiny_config("qwen2-7b"), "qwen2") == "model.layers."
