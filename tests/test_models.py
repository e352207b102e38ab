"""Unit tests of the ViT segmenter, its bridges, its config and its parameter counts (tiny configs)."""

from __future__ import annotations

import csv

import pytest
import torch

from medvisionllama.errors import InputError
from medvisionllama.models import (
    ATTENTION_STRATEGIES,
    ChannelAttentionBlock,
    DecoderBlock,
    EfficientAttentionBlock,
    EncoderBlock,
    ModelConfig,
    MultiScaleFusionBlock,
    PatchEmbeddingBlock,
    SpatialAttentionBlock,
    build_model,
)
from medvisionllama.models import params as params_cli
from medvisionllama.models.decoder import upsampling_factors

TINY = dict(img_size=(8, 16, 12), patch_size=4, hidden_size=16, num_layers=1, num_heads=2, num_classes=3, in_channels=3)
LLM_TINY = "smollm2-135m-random"  # the smallest real layer (576 wide); random weights, no file read


def tiny(**changes) -> ModelConfig:
    return ModelConfig(**{**TINY, **changes})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- blocks ----------------------------------------------------------------------------------


def test_patch_embedding_shapes_and_other_sizes():
    embed = PatchEmbeddingBlock(in_channels=2, hidden_size=8, img_size=(8, 12, 4), patch_size=4)
    tokens, grid = embed(torch.randn(2, 2, 8, 12, 4))
    assert grid == (2, 3, 1) and tokens.shape == (2, 6, 8)
    tokens, grid = embed(torch.randn(1, 2, 16, 4, 8))  # another size: position table resampled
    assert grid == (4, 1, 2) and tokens.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="not divisible"):
        embed(torch.randn(1, 2, 8, 10, 4))
    with pytest.raises(ValueError, match=r"\(8, 10, 4\)"):
        PatchEmbeddingBlock(2, 8, (8, 10, 4), 4)


def test_multiscale_fusion_and_decoder_shapes():
    fusion = MultiScaleFusionBlock(hidden_size=6)
    tokens = torch.randn(2, 2 * 3 * 5, 6)
    assert fusion(tokens, (2, 3, 5)).shape == tokens.shape
    assert upsampling_factors(8) == [2, 2, 2] and upsampling_factors(6) == [2, 3] and upsampling_factors(1) == []
    for patch in (1, 4, 6):
        decoder = DecoderBlock(hidden_size=16, patch_size=patch, num_classes=5)
        logits, features = decoder(torch.randn(1, 16, 2, 3, 1))
        assert logits.shape == (1, 5, 2 * patch, 3 * patch, patch)
        assert features.shape[2:] == logits.shape[2:]


def test_efficient_attention_matches_reference_formula():
    block = EfficientAttentionBlock(hidden_size=6, num_heads=2).eval()
    x = torch.randn(2, 5, 6)
    q, k, v = block.qkv(x).chunk(3, dim=-1)  # each (B, T, E)
    heads = []
    for h in range(2):  # E(Q, K, V) = rho_q(Q) (rho_k(K)^T V), per head, written out directly
        sl = slice(3 * h, 3 * h + 3)
        rho_q = torch.exp(q[..., sl]) / torch.exp(q[..., sl]).sum(dim=-1, keepdim=True)  # over features
        rho_k = torch.exp(k[..., sl]) / torch.exp(k[..., sl]).sum(dim=1, keepdim=True)  # over positions
        heads.append(torch.einsum("btd,bte,bse->bsd", v[..., sl], rho_k, rho_q))
    reference = block.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(block(x), reference)


def test_channel_and_spatial_attention_shapes_and_gate():
    channel = ChannelAttentionBlock(hidden_size=8, reduction=4)
    x = torch.randn(2, 7, 8)
    y = channel(x)
    assert y.shape == x.shape
    gate = y / x
    assert torch.all((gate > 0) & (gate < 1)) and torch.allclose(gate, gate[:, :1].expand_as(gate), atol=1e-5)
    spatial = SpatialAttentionBlock(hidden_size=8, num_heads=2)
    assert spatial(x).shape == x.shape


@pytest.mark.parametrize("attention", ATTENTION_STRATEGIES)
def test_encoder_block_strategies(attention):
    block = EncoderBlock(hidden_size=8, num_heads=2, mlp_dim=16, attention=attention)
    x = torch.randn(2, 9, 8)
    assert block(x).shape == x.shape
    # interleaved has the most parameters, parallel the fewest (one norm fewer), as in Appendix Table 1
    sizes = {a: sum(p.numel() for p in EncoderBlock(8, 2, 16, a).parameters()) for a in ATTENTION_STRATEGIES[:3]}
    assert sizes["hybrid-interleaved"] > sizes["hybrid-sequential"] > sizes["hybrid-parallel"]


def test_bad_block_arguments():
    with pytest.raises(ValueError, match="'global'"):
        EncoderBlock(8, 2, 16, attention="global")
    with pytest.raises(ValueError, match="num_heads 3"):
        EfficientAttentionBlock(8, 3)


# ---- the model -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model,in_channels,num_classes",
    [("vit", 1, 2), ("mlp", 2, 5), (LLM_TINY, 4, 3), ("vit", 3, 1)],
)
def test_model_shapes_every_variant(model, in_channels, num_classes):
    config = tiny(model=model, in_channels=in_channels, num_classes=num_classes)
    net = build_model(config, load_weights=False)
    x = torch.randn(2, in_channels, *config.img_size)
    logits, features = net(x, return_features=True)
    assert logits.shape == (2, num_classes, *config.img_size)
    assert features["V_E"].shape == (2, 16, 2, 4, 3)
    assert features["V_D"].shape[2:] == config.img_size
    assert ("V_LLM" in features) == (model != "vit")
    if model == LLM_TINY:
        assert features["V_LLM"].shape == (2, 576, 2, 4, 3)
    assert net(x).shape == logits.shape
    with pytest.raises(ValueError, match="expected input"):
        net(torch.randn(1, in_channels + 1, *config.img_size))


@pytest.mark.parametrize("attention", ATTENTION_STRATEGIES)
def test_model_attention_strategies(attention):
    net = build_model(tiny(attention=attention, num_layers=2))
    assert net(torch.randn(1, 3, 8, 16, 12)).shape == (1, 3, 8, 16, 12)


def test_frozen_block_gets_no_gradient_but_encoder_does():
    net = build_model(tiny(model=LLM_TINY), load_weights=False)
    net.train()
    assert net.frozen_block is not None and not net.frozen_block.layer.training
    logits = net(torch.randn(1, 3, 8, 16, 12))
    logits.square().mean().backward()
    frozen = list(net.frozen_block.parameters())
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    for module in (net.embed.proj, net.blocks[0].steps[0].qkv, net.bridge.l1, net.bridge.l2, net.decoder.head):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    total, trainable = net.parameter_counts()
    assert total - trainable == sum(p.numel() for p in frozen)


def test_trainable_state_dict_round_trip_and_errors():
    config = tiny(model=LLM_TINY)
    first = build_model(config, load_weights=False)
    torch.manual_seed(1)
    second = build_model(config, load_weights=False)
    state = first.trainable_state_dict()
    assert state and not any(k.startswith("bridge.mixer.") for k in state)
    assert any(k.startswith("bridge.l1.") for k in state)
    x = torch.randn(1, 3, 8, 16, 12)
    assert not torch.allclose(first(x), second(x))
    second.load_trainable_state_dict(state)
    torch.testing.assert_close(first(x), second(x))  # the random frozen block is rebuilt identically

    missing = dict(state)
    del missing["decoder.head.weight"]
    with pytest.raises(InputError, match="missing keys: decoder.head.weight"):
        second.load_trainable_state_dict(missing)
    with pytest.raises(InputError, match="unexpected keys: extra.weight"):
        second.load_trainable_state_dict({**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(InputError, match="'bridge.l1.weight' has shape"):
        second.load_trainable_state_dict({**state, "bridge.l1.weight": torch.zeros(3, 3)})


# ---- the config ------------------------------------------------------------------------------


def test_config_round_trip_and_validation():
    config = tiny(model="qwen2-7b-random", llm_layer=-1, llm_weights="Qwen/Qwen2-7B")
    data = config.to_dict()
    assert data["img_size"] == [8, 16, 12]
    assert ModelConfig.from_dict(data) == config
    assert (config.bridge, config.llm_name, config.pretrained) == ("llm", "qwen2-7b", False)
    with pytest.raises(InputError, match="'windowed'"):
        tiny(attention="windowed")
    with pytest.raises(InputError, match=r"img_size=\(8, 16, 10\).*patch_size=4"):
        tiny(img_size=(8, 16, 10))
    with pytest.raises(InputError, match="unknown model 'gpt5'.*llama3.1-8b"):
        tiny(model="gpt5")
    with pytest.raises(InputError, match="llm_layer 28 is out of range"):
        tiny(model="qwen2-7b", llm_layer=28)
    with pytest.raises(InputError, match="dropout=1.5"):
        tiny(dropout=1.5)
    with pytest.raises(InputError, match="unknown model setting.*depth"):
        ModelConfig.from_dict({**data, "depth": 3})


# ---- parameter counts ------------------------------------------------------------------------


def test_llama_layer_count_from_config_arithmetic():
    h, i, nq, nkv, hd = 4096, 14336, 32, 8, 128  # Llama-3.1-8B
    per_layer = h * nq * hd + 2 * h * nkv * hd + nq * hd * h + 3 * h * i + 2 * h
    assert per_layer == 218_112_000
    net = build_model(ModelConfig(model="llama3.1-8b"), device="meta")
    assert net.frozen_block.layer.self_attn.q_proj.weight.is_meta
    total, trainable = net.parameter_counts()
    assert total - trainable == per_layer


def test_param_counts_default_vit_and_cli(tmp_path, capsys):
    rows = {r.model: r for r in params_cli.count_variants(["vit", "mlp", "qwen2-7b", "gemma2-9b", "yi1.5-9b"])}
    assert rows["vit"].total_params == pytest.approx(0.84e6, rel=0.02)
    assert rows["mlp"].total_params - rows["vit"].total_params == pytest.approx(0.12e6, rel=0.2)
    assert rows["qwen2-7b"].frozen_params == 233_057_792
    assert rows["gemma2-9b"].frozen_params == pytest.approx(198e6, rel=0.01)  # not the paper's 264.25 M
    assert rows["yi1.5-9b"].frozen_params == pytest.approx(173e6, rel=0.01)  # not the paper's 202.39 M
    out = tmp_path / "params.csv"
    assert params_cli.main(["--models", "vit", "mistral-7b", "--output", str(out)]) == 0
    table = list(csv.DictReader(out.open()))
    assert [r["model"] for r in table] == ["vit", "mistral-7b"]
    assert int(table[1]["frozen_params"]) == 218_112_000 and table[1]["paper_params_m"] == "218.12"
    assert "mistral-7b" in capsys.readouterr().out
