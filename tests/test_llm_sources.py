"""Layer-only loading from sharded safetensors checkpoints (local and hub) vs transformers' full load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from medvisionllama.errors import InputError
from medvisionllama.llm import LLM_REGISTRY, FrozenLLMBlock, LLMSpec, build_frozen_block, read_layer_from_directory
from medvisionllama.llm import sources
from medvisionllama.llm.registry import _smollm2_135m

LAYER = 2


def tiny_llama_config():
    config = _smollm2_135m()  # the registry's config class, shrunk
    for key, value in dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=8, num_hidden_layers=4, vocab_size=64).items():
        setattr(config, key, value)
    return config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 4-layer Llama checkpoint saved by transformers in many small shards."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(directory, max_shard_size="40KB")
    return directory


@pytest.fixture
def tiny_registry(monkeypatch, checkpoint):
    spec = LLMSpec("tiny-llama", "someone/tiny-llama", "llama", tiny_llama_config)
    monkeypatch.setitem(LLM_REGISTRY, spec.name, spec)
    return spec


def shards_of_layer(directory: Path, layer: int) -> set[str]:
    weight_map = json.loads((directory / sources.INDEX_FILE).read_text())["weight_map"]
    return {f for k, f in weight_map.items() if k.startswith(f"model.layers.{layer}.")}


def record_opens(monkeypatch) -> list[str]:
    opened: list[str] = []
    real = sources.safe_open

    def spy(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sources, "safe_open", spy)
    return opened


def test_layer_only_load_matches_full_model(checkpoint, tiny_registry, monkeypatch):
    all_shards = set(json.loads((checkpoint / sources.INDEX_FILE).read_text())["weight_map"].values())
    needed = shards_of_layer(checkpoint, LAYER)
    assert len(all_shards) > len(needed) >= 1
    opened = record_opens(monkeypatch)

    block = build_frozen_block("tiny-llama", layer=LAYER, weights=str(checkpoint))
    assert set(opened) == needed and block.source == f"directory:{checkpoint}"

    full = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    reference = FrozenLLMBlock(tiny_llama_config(), "llama", LAYER)
    reference.load_layer_state_dict({k: v.clone() for k, v in full.model.layers[LAYER].state_dict().items()})
    for key, value in full.model.layers[LAYER].state_dict().items():
        assert torch.equal(block.layer.state_dict()[key], value), key
    x = torch.randn(2, 5, 32)
    assert torch.equal(block(x), reference(x))


def test_hub_downloads_only_index_and_needed_shards(checkpoint, tiny_registry, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    requested: list[tuple[str, str]] = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        requested.append((repo_id, filename))
        path = checkpoint / filename
        if not path.is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    block = build_frozen_block("tiny-llama", layer=LAYER)  # weights None -> the entry's hub id
    assert block.source == "hub:someone/tiny-llama"
    assert requested[0] == ("someone/tiny-llama", sources.INDEX_FILE)
    assert {f for _, f in requested[1:]} == shards_of_layer(checkpoint, LAYER)
    local = read_layer_from_directory(checkpoint, LAYER)
    for key, value in block.layer.state_dict().items():
        assert torch.equal(value, local[key]), key


def test_single_file_checkpoint(tmp_path, tiny_registry):
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(tmp_path)  # one model.safetensors
    assert (tmp_path / sources.SINGLE_FILE).is_file() and not (tmp_path / sources.INDEX_FILE).exists()
    weights = read_layer_from_directory(tmp_path, 1)
    assert set(weights) == set(FrozenLLMBlock(tiny_llama_config(), "llama", 1).expected_shapes())


def test_missing_unexpected_misshaped_weights_name_the_key(checkpoint, tiny_registry):
    block = FrozenLLMBlock(tiny_llama_config(), "llama", LAYER)
    good = read_layer_from_directory(checkpoint, LAYER)
    missing = {k: v for k, v in good.items() if k != "mlp.up_proj.weight"}
    with pytest.raises(InputError, match="missing weight.*mlp.up_proj.weight"):
        block.load_layer_state_dict(missing)
    with pytest.raises(InputError, match="unexpected weight.*self_attn.rotary.inv_freq"):
        block.load_layer_state_dict({**good, "self_attn.rotary.inv_freq": torch.zeros(4)})
    with pytest.raises(InputError, match=r"'self_attn.k_proj.weight' has shape \(32, 32\), expected \(16, 32\)"):
        block.load_layer_state_dict({**good, "self_attn.k_proj.weight": torch.zeros(32, 32)})
    with pytest.raises(InputError, match="no weights named model.layers.7"):
        read_layer_from_directory(checkpoint, 7)


def test_weights_source_errors(tmp_path, tiny_registry):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(InputError, match="neither a .gguf file nor a layer file"):
        build_frozen_block("tiny-llama", weights=str(tmp_path / "weights.bin"))
    with pytest.raises(InputError, match="no such file or directory"):
        build_frozen_block("tiny-llama", weights=str(tmp_path / "absent" / "model.gguf"))
    with pytest.raises(InputError, match="neither model.safetensors.index.json nor model.safetensors"):
        build_frozen_block("tiny-llama", weights=str(tmp_path))


def test_extracted_layer_file_gives_the_same_block_and_refuses_another_layer(checkpoint, tiny_registry, tmp_path):
    from medvisionllama.cli import main as mvl
    from medvisionllama.llm.extract import extract_layer

    layer_file = extract_layer("tiny-llama", tmp_path / "tiny.safetensors", layer=2, weights=str(checkpoint))
    direct = build_frozen_block("tiny-llama", layer=2, weights=str(checkpoint))
    from_file = build_frozen_block("tiny-llama", layer=2, weights=str(layer_file))
    for (key, a), (_, b) in zip(direct.state_dict().items(), from_file.state_dict().items()):
        assert torch.equal(a, b), key
    assert from_file.source.startswith(f"layer-file:{layer_file}") and str(checkpoint) in from_file.source
    with pytest.raises(InputError, match="holds layer 2 of tiny-llama, but layer 1 of tiny-llama"):
        build_frozen_block("tiny-llama", layer=1, weights=str(layer_file))
    # a safetensors file that is not a layer file, and the command line
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not a layer file"):
        build_frozen_block("tiny-llama", layer=2, weights=str(tmp_path / "other.safetensors"))
    out = tmp_path / "cli.safetensors"
    assert mvl(["extract-layer", "--llm", "tiny-llama", "--layer", "2", "--weights", str(checkpoint), "--output", str(out)]) == 0
    from safetensors.torch import load_file

    a, b = load_file(str(out)), load_file(str(layer_file))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_layer_file_hash_refuses_flipped_bytes_and_files_without_one(checkpoint, tiny_registry, tmp_path):
    from safetensors.torch import load_file, save_file

    from medvisionllama.llm.extract import extract_layer
    from medvisionllama.llm.layer_file import DIGEST_KEY, FORMAT, layer_file_digest

    path = extract_layer("tiny-llama", tmp_path / "tiny.safetensors", layer=2, weights=str(checkpoint))
    digest = layer_file_digest(path)
    assert digest == read_layer_digest_again(path)
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    for offset in (header, (header + len(data)) // 2, len(data) - 1):  # first, middle and last tensor byte
        flipped = tmp_path / f"flipped-{offset}.safetensors"
        changed = bytearray(data)
        changed[offset] ^= 0x80
        flipped.write_bytes(bytes(changed))
        with pytest.raises(InputError, match=rf"^{flipped}: corrupt layer file .*sha256"):
            build_frozen_block("tiny-llama", layer=2, weights=str(flipped))
    old = tmp_path / "old.safetensors"  # written before hashes: cannot be verified, refused
    save_file(load_file(str(path)), str(old), metadata={"format": FORMAT, "llm": "tiny-llama", "layer": "2", "source": "x"})
    with pytest.raises(InputError, match=rf"^{old}: layer file has no {DIGEST_KEY} content hash"):
        build_frozen_block("tiny-llama", layer=2, weights=str(old))


def read_layer_digest_again(path) -> str:
    """The hash recomputed from the tensors as safetensors loads them."""
    from safetensors.torch import load_file

    from medvisionllama.llm.layer_file import layer_digest

    return layer_digest(load_file(str(path)), llm="tiny-llama", layer=2)
