"""V_LLM: the frozen LLM decoder layer, its registry and its weight sources."""

from medvisionllama.llm.block import FrozenLLMBlock
from medvisionllama.llm.factory import build_frozen_block, default_dtype, resolve_weights_source
from medvisionllama.llm.gguf_source import packaged_gguf_path, read_layer_from_gguf
from medvisionllama.llm.registry import (
    LLM_REGISTRY,
    PAPER_PARAMS_M,
    LLMSpec,
    get_spec,
    known_model_names,
    parse_model_name,
)
from medvisionllama.llm.sources import read_layer_from_directory, read_layer_from_hub

__all__ = [
    "LLM_REGISTRY",
    "PAPER_PARAMS_M",
    "FrozenLLMBlock",
    "LLMSpec",
    "build_frozen_block",
    "default_dtype",
    "get_spec",
    "known_model_names",
    "packaged_gguf_path",
    "parse_model_name",
    "read_layer_from_directory",
    "read_layer_from_gguf",
    "read_layer_from_hub",
    "resolve_weights_source",
]
