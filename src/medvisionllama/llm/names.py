"""The model names the pipeline knows, without importing transformers (Snakemake checks a config
against them when it plans the DAG). ``llm.registry`` holds the entries themselves; a test keeps
the two in step."""

from __future__ import annotations

#: registry names of the LLMs whose decoder layer can serve as V_LLM
LLM_NAMES: tuple[str, ...] = ("llama3.1-8b", "gemma2-9b", "mistral-7b", "qwen2-7b", "yi1.5-9b", "smollm2-135m")
#: suffix of the random-weights control of an LLM block (``smollm2-135m-random``)
RANDOM_SUFFIX = "-random"
#: models without an LLM block: the plain ViT and the GELU + LayerNorm ablation
NON_LLM_MODELS: tuple[str, ...] = ("vit", "mlp")


def pretrained_llm(model: str) -> str | None:
    """The LLM whose pretrained layer ``model`` needs (``smollm2-135m`` -> itself), else None."""
    if model in NON_LLM_MODELS or model.endswith(RANDOM_SUFFIX):
        return None
    return model.removeprefix("llm:")


def check_model_name(model: str) -> None:
    """Raise ``InputError`` naming the known models when ``model`` is not one of them."""
    from medvisionllama.errors import InputError

    base = model.removeprefix("llm:").removesuffix(RANDOM_SUFFIX)
    if model not in NON_LLM_MODELS and base not in LLM_NAMES:
        known = list(NON_LLM_MODELS) + [n + s for n in LLM_NAMES for s in ("", RANDOM_SUFFIX)]
        raise InputError(f"unknown model {model!r}; known: {', '.join(known)}")
