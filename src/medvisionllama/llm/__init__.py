"""V_LLM: the frozen LLM decoder layer, its registry and its weight sources.

The public names are re-exported lazily, on purpose: :mod:`medvisionllama.vocabulary` (read by
Snakemake at parse time) imports :mod:`medvisionllama.llm.registry`, which must not pull in torch
through this package's ``__init__``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FrozenLLMBlock": "block",
    "build_frozen_block": "factory", "default_dtype": "factory", "resolve_weights_source": "factory",
    "packaged_gguf_path": "gguf_source", "read_layer_from_gguf": "gguf_source",
    "LLM_REGISTRY": "registry", "PAPER_PARAMS_M": "registry", "LLMSpec": "registry", "get_spec": "registry",
    "read_layer_from_directory": "sources", "read_layer_from_hub": "sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
