"""Any decoder LLM from a local Hugging Face folder (config.json + sharded safetensors).

For each family a tiny model is written by transformers' own ``save_pretrained`` in many small
shards and registered by folder, as the config's ``llms:`` does. The block built from it must
equal the full model's own decoder layer (loaded by ``from_pretrained``) run with an explicit
all-zero attention mask (every token sees every token) and identity rotary embeddings — the
family, layer class, weight prefix (``gpt_neox.layers.`` for GPT-NeoX) and rotary size all come
from the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from transformers import AutoConfig, AutoModelForCausalLM

from medvisionllama.cluster import resources as R
from medvisionllama.errors import InputError
from medvisionllama.experiments import experiment_specs
from medvisionllama.llm import LLM_REGISTRY, build_frozen_block, sources
from medvisionllama.llm.block import decoder_layer_class
from medvisionllama.llm.extract import extract_layer
from medvisionllama.llm.registry import PRESETS, llm_dims, register_folder, register_llms

LAYER = 1
COMMON = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, vocab_size=64)
#: model_type -> extra config values (grouped key/value heads, partial rotary, soft-capping, ...)
FAMILIES = {
    "llama": dict(num_key_value_heads=2, head_dim=8),
    "qwen2": dict(num_key_value_heads=2),
    "mistral": dict(num_key_value_heads=2, head_dim=8, sliding_window=2),
    "gemma": dict(num_key_value_heads=2, head_dim=8),
    "gemma2": dict(num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, attn_logit_softcapping=5.0,
                   sliding_window=2),
    "phi3": dict(num_key_value_heads=2, partial_rotary_factor=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "olmo": dict(num_key_value_heads=2, clip_qkv=3.0, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "gpt_neox": dict(rotary_pct=0.5, bos_token_id=1, eos_token_id=2),
}
#: where each family keeps its decoder layers (written here by hand: what the block must find)
LAYERS_AT = {"gpt_neox": "gpt_neox.layers"}


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Folder entries registered by a test are gone after it."""
    monkeypatch.setattr("medvisionllama.llm.registry.LLM_REGISTRY", LLM_REGISTRY)
    before = dict(LLM_REGISTRY)
    yield
    LLM_REGISTRY.clear()
    LLM_REGISTRY.update(before)


def save_tiny(family: str, directory: Path) -> Path:
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, **COMMON, **FAMILIES[family])
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, param in model.named_parameters():  # large weights: attention far from uniform,
            param.normal_(0.5 if "norm" in name else 0.0, 0.3)  # norms away from their identity
    model.save_pretrained(directory, max_shard_size="20KB")
    return directory


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return {family: save_tiny(family, tmp_path_factory.mktemp(family)) for family in FAMILIES}


def reference_layer_output(folder: Path, family: str, x: torch.Tensor) -> torch.Tensor:
    """The full model's layer LAYER on ``x``: eager attention with a zero (attend-everywhere)
    4D mask, and the model's own rotary embeddings replaced by cos = 1, sin = 0."""
    full = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    layer = full.get_submodule(LAYERS_AT.get(family, "model.layers"))[LAYER]
    rotary = next(m for n, m in full.named_modules() if n.endswith("rotary_emb"))
    tokens = x.shape[1]
    cos, sin = rotary(x, torch.arange(tokens)[None])
    mask = torch.zeros(x.shape[0], 1, tokens, tokens)
    with torch.no_grad():
        out = layer(x, attention_mask=mask, position_embeddings=(torch.ones_like(cos), torch.zeros_like(sin)))
    return out[0] if isinstance(out, tuple) else out


def shards_holding(folder: Path, prefix: str) -> set[str]:
    weight_map = json.loads((folder / sources.INDEX_FILE).read_text())["weight_map"]
    return {shard for name, shard in weight_map.items() if name.startswith(prefix)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_folder_block_equals_the_full_models_layer(family, folders, monkeypatch):
    folder = folders[family]
    all_shards = set(json.loads((folder / sources.INDEX_FILE).read_text())["weight_map"].values())
    needed = shards_holding(folder, f"{LAYERS_AT.get(family, 'model.layers')}.{LAYER}.")
    assert len(all_shards) > len(needed) >= 1
    opened: list[str] = []
    real_open = sources.safe_open
    monkeypatch.setattr(sources, "safe_open", lambda path, *a, **k: opened.append(Path(path).name) or real_open(path, *a, **k))

    register_llms({f"tiny-{family}": {"path": str(folder), "layer": LAYER}})
    block = build_frozen_block(f"tiny-{family}")  # weights: the folder; layer: the entry's
    assert (block.family, block.layer_index, block.source) == (family, LAYER, f"directory:{folder.resolve()}")
    assert set(opened) == needed  # only the shards holding the layer were opened

    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(block(x), reference_layer_output(folder, family, x), rtol=1e-5, atol=1e-5)
    x2 = x.clone()
    x2[:, -1] = torch.randn(2, 32)  # (a constant shift would vanish in GPT-NeoX's LayerNorm)
    assert not torch.allclose(block(x)[:, 0], block(x2)[:, 0], atol=1e-5), "the first token must see the last one"


@pytest.mark.parametrize("family", ["gemma", "gpt_neox"])
def test_random_control_norms_start_at_their_identity(family, folders):
    """Gemma's norms scale by 1 + w (identity at w = 0), GPT-NeoX's LayerNorm by w (identity at
    w = 1, bias 0): the random control's norms are their identities in both."""
    register_folder("tiny", folders[family])
    block = build_frozen_block("tiny", control="random")
    norms = {k: v for k, v in block.layer.state_dict().items() if "norm" in k}
    assert norms
    for key, value in norms.items():
        identity = 0.0 if family == "gemma" or key.endswith(".bias") else 1.0
        assert torch.all(value == identity), key


def test_folder_dims_are_the_config_json_and_feed_the_cluster_estimates(folders):
    register_llms({"neox": {"path": str(folders["gpt_neox"])}})
    assert llm_dims("neox") == dict(hidden_size=32, intermediate_size=48, num_attention_heads=4,
                                    num_key_value_heads=4, head_dim=8, num_hidden_layers=3)
    assert LLM_REGISTRY["neox"].resolve_layer(None) == 2  # no layer given: the last
    assert R.layer_params("neox") == 2 * 32 * 32 + 2 * 32 * 32 + 3 * 32 * 48
    vit = R.estimate_training("64x64x40", "vit", epochs=10, train_cases=20, device="cpu")
    neox = R.estimate_training("64x64x40", "neox-random", epochs=10, train_cases=20, device="cpu")
    assert neox.runtime_min >= vit.runtime_min and neox.mem_mb >= vit.mem_mb


def test_config_llms_make_model_names(folders):
    config = tiny_config(llms={"qwen-tiny": {"path": str(folders["qwen2"]), "layer": -1}})
    config["experiments"]["main"]["models"] = ["vit", "qwen-tiny", "qwen-tiny-shuffled"]
    assert "qwen-tiny" not in LLM_REGISTRY
    specs = experiment_specs(config)  # registers the folder, then reads the model names
    assert specs[0].models[1:] == ("qwen-tiny", "qwen-tiny-shuffled") or list(specs[0].models[1:]) == [
        "qwen-tiny", "qwen-tiny-shuffled"]
    assert LLM_REGISTRY["qwen-tiny"].resolve_layer(None) == 2  # layer -1 of 3


def test_extract_layer_registers_an_unknown_name_from_its_folder(folders, tmp_path):
    out = extract_layer("my-olmo", tmp_path / "olmo.safetensors", weights=str(folders["olmo"]), layer=0)
    assert out.is_file() and "my-olmo" in LLM_REGISTRY


def test_bad_folders_and_families_are_refused_in_one_line(folders, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        register_folder("x", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="config.json not found"):
        register_folder("x", tmp_path / "empty")
    with pytest.raises(InputError, match="preset"):
        register_folder(PRESETS[0], folders["llama"])
    with pytest.raises(InputError, match="out of range"):
        register_folder("x", folders["llama"], layer=3)
    with pytest.raises(InputError, match="cannot name an LLM"):
        register_folder("x-random", folders["llama"])
    assert "x" not in LLM_REGISTRY
    # a family without rotary positions, and one whose layer needs ALiBi: refused, named
    gpt2 = tmp_path / "gpt2"
    AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_embd=16, n_layer=2, n_head=2, vocab_size=32, bos_token_id=1, eos_token_id=1)).save_pretrained(gpt2)
    register_folder("tiny-gpt2", gpt2)
    with pytest.raises(InputError, match=r"^LLM tiny-gpt2 .*'gpt2' cannot serve as V_LLM") as info:
        build_frozen_block("tiny-gpt2")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="'falcon' cannot serve as V_LLM: FalconDecoderLayer needs alibi"):
        decoder_layer_class("falcon")
    with pytest.raises(ValueError, match="'bert': BertLMHeadModel declares no single decoder-layer class"):
        decoder_layer_class("bert")
    with pytest.raises(ValueError, match="'vit' has no causal-LM"):
        decoder_layer_class("vit")


def test_results_readers_know_a_folder_llm_whose_folder_is_elsewhere(tmp_path):
    """A reviewer regenerating tables has the config but not the LLM folder: the name still
    parses; what needs the folder says where it was."""
    import yaml

    from medvisionllama.experiments import load_config
    from medvisionllama.vocabulary import parse_model_name

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"llms": {"gone": {"path": str(tmp_path / "nowhere")}}}))
    load_config(tmp_path / "config.yaml")
    assert parse_model_name("gone-shuffled").llm == "gone"
    with pytest.raises(InputError, match="nowhere' does not exist on this machine"):
        LLM_REGISTRY["gone"].resolve_layer(None)
    with pytest.raises(InputError, match="does not exist"):  # the pipeline's own parse still refuses it
        register_llms({"gone": {"path": str(tmp_path / "nowhere")}})
