"""V_LLM: one frozen decoder layer of a pre-trained LLM, as a plain token mixer.

This module is the only place that knows ``transformers``' calling contract for decoder layers
(pinned: transformers 5.23; the block's tests also pass with 5.17.0, the GPU machines' version).
Elsewhere the block is ``(B, T, d_llm) -> (B, T, d_llm)``.

What the contract is in 5.23 (read from ``models/*/modeling_*.py`` and
``integrations/sdpa_attention.py``):

- A family is a ``model_type``; its decoder-layer class is the one its causal LM declares
  unsplittable (``_no_split_modules``: ``LlamaDecoderLayer``, ``GPTNeoXLayer``, ...), found by
  :func:`decoder_layer_class`, which refuses families that cannot serve; each takes
  ``(config, layer_idx)``. The layers' weight prefix (:func:`layers_prefix`) and the rotary size
  (:func:`rotary_size`) come from the same modeling module.
- ``forward(hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
  position_embeddings=None, **kwargs)``. ``position_embeddings`` is typed optional but the
  attention unpacks it (``cos, sin = position_embeddings``), so it is required. It returns a
  tensor (earlier releases returned a tuple; both are accepted here).
- Attention runs through ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]``. ``eager`` is
  non-causal when no mask is given but materialises (B, H, T, T) scores. ``sdpa`` is *causal* with
  no mask unless the call passes ``is_causal=False`` (``is_causal = q_len > 1 and mask is None and
  (kwarg or module.is_causal)``), and refuses Gemma-2's logit soft-capping.

The paper (Section 3.1, after R-LLM) removes the rotary position embedding and the attention mask:
we pass ``cos = 1, sin = 0`` (RoPE becomes the identity), no mask, ``is_causal=False``, and also
set every attention module's ``is_causal`` attribute to False, so no backend can fall back to a
causal mask.

By default every family runs our own attention function, registered with transformers'
``AttentionInterface`` (``llm.attention_kernels``): non-causal SDPA (flash / memory-efficient
kernels on CUDA, memory linear in T) and, for Gemma-2's soft-capped logits, query-chunked attention
with checkpointed chunks (memory O(chunk × T)). It computes what ``eager`` computes, without the
T × T matrices that ~17,000 tokens of a full-size volume would need; ``eager`` and ``sdpa`` remain
selectable (the tests compare them). No sliding window is applied on any layer (see
``llm.attention_kernels``): as before, every token attends to every token.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from medvisionllama.llm.attention_kernels import ATTENTION_NAME, register_attention
from medvisionllama.llm.sources import check_layer_weights

if TYPE_CHECKING:
    from transformers import PretrainedConfig

#: attention backends: ours (the default, memory-efficient) and transformers' two references.
#: ``sdpa`` cannot soft-cap, so Gemma-2 accepts only ours and ``eager``.
ATTENTION_BACKENDS = (ATTENTION_NAME, "sdpa", "eager")


@functools.lru_cache(maxsize=None)
def family_module(family: str) -> ModuleType:
    """``transformers.models.<family>.modeling_<family>``: the modeling module of a ``model_type``;
    ``ValueError`` naming the family when transformers has no causal LM of that type."""
    from transformers.models.auto.configuration_auto import model_type_to_module_name
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if family not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"LLM family {family!r} has no causal-LM (decoder) model in transformers {_tf_version()}")
    module_name = model_type_to_module_name(family)
    return importlib.import_module(f"transformers.models.{module_name}.modeling_{module_name}")


def _tf_version() -> str:
    import transformers

    return transformers.__version__


@functools.lru_cache(maxsize=None)
def decoder_layer_class(family: str) -> type[nn.Module]:
    """The transformers decoder-layer class of ``family`` (a ``model_type``): the layer its causal
    LM declares unsplittable (``_no_split_modules``). ``ValueError`` in one line naming the family
    when it has none, or when the layer cannot be run as V_LLM (non-causal, without positions):
    its forward must take ``position_embeddings`` (RoPE, made the identity), need no other input,
    and its attention must go through transformers' attention interface (where the block's
    non-causal attention is registered)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    module = family_module(family)
    lm_class = getattr(module, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[family])
    names = [n for n in (getattr(lm_class, "_no_split_modules", None) or []) if isinstance(getattr(module, n, None), type)]
    if len(names) != 1:
        raise ValueError(f"LLM family {family!r}: {lm_class.__name__} declares no single decoder-layer class "
                         f"(found {names or 'none'}), so no layer can be taken from it")
    layer_class = getattr(module, names[0])
    params = inspect.signature(layer_class.forward).parameters
    if "position_embeddings" not in params:
        raise ValueError(f"LLM family {family!r} cannot serve as V_LLM: {layer_class.__name__} takes no rotary "
                         "position_embeddings, so its positions cannot be removed")
    required = [n for n, p in list(params.items())[2:]
                if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise ValueError(f"LLM family {family!r} cannot serve as V_LLM: {layer_class.__name__} needs "
                         f"{', '.join(required)} besides the hidden states")
    if "ALL_ATTENTION_FUNCTIONS" not in inspect.getsource(module) or _rotary_class(module) is None:
        raise ValueError(f"LLM family {family!r} cannot be made non-causal: its attention does not go through "
                         "transformers' attention interface with rotary embeddings")
    return layer_class


def _rotary_class(module: ModuleType) -> type[nn.Module] | None:
    """The family's rotary-embedding module class (``*RotaryEmbedding``), or None."""
    found = [v for k, v in vars(module).items() if k.endswith("RotaryEmbedding") and isinstance(v, type)
             and v.__module__ == module.__name__]
    return found[0] if found else None


def rotary_size(config: PretrainedConfig, family: str) -> int:
    """The last dimension of the cos/sin the family's attention expects: the family's own rotary
    module, run once on CPU (Phi-3 and GPT-NeoX rotate only part of each head)."""
    rotary = _rotary_class(family_module(family))
    with torch.device("cpu"):
        cos, _ = rotary(config=config)(torch.zeros(1, 1, 1), torch.zeros(1, 1, dtype=torch.long))
    return int(cos.shape[-1])


def layers_prefix(config: PretrainedConfig, family: str) -> str:
    """Where the decoder layers sit in the family's causal-LM checkpoints, e.g. ``model.layers.``
    (Llama, Qwen2, ...) or ``gpt_neox.layers.`` (GPT-NeoX): the path of the module list of
    decoder layers in the causal LM transformers builds from ``config`` (on ``meta``, nothing
    allocated); layer ``i``'s weights are then ``{prefix}{i}.*``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    layer_class = decoder_layer_class(family)
    lm_class = getattr(family_module(family), MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[family])
    config = copy.deepcopy(config)
    config._attn_implementation = "eager"
    with torch.device("meta"):
        model = lm_class(config)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and isinstance(module[0], layer_class):
            return f"{name}."
    raise ValueError(f"LLM family {family!r}: {lm_class.__name__} holds no list of {layer_class.__name__}")


class FrozenLLMBlock(nn.Module):
    """One frozen LLM decoder layer without RoPE and without a causal mask (V_LLM).

    Built empty (on any device, ``meta`` included); weights arrive through
    :meth:`load_layer_state_dict` or :meth:`init_random`. Parameters never require gradients,
    the layer stays in eval mode, and it runs in its own dtype (bf16 on CUDA, float32 on CPU):
    inputs are cast to it and outputs cast back, so gradients still flow to the layers around it.

    Args:
        config: the full model's ``transformers`` config (from the registry).
        family: the ``model_type`` (``llama``, ``gemma2``, ``gpt_neox``, ...); see
            :func:`decoder_layer_class` for which families can serve.
        layer_index: which decoder layer of the LLM this is (matters for Gemma-2's alternating
            sliding/full layers and for naming weights).
        attn_implementation: one of :data:`ATTENTION_BACKENDS`; default: ours, memory-efficient
            (``llm.attention_kernels``).
        query_chunk_size: queries per chunk of the soft-capped (Gemma-2) attention; default: as
            many as fit :data:`llm.attention_kernels.CHUNK_ELEMENTS` scores.
    """

    def __init__(
        self,
        config: PretrainedConfig,
        family: str,
        layer_index: int,
        attn_implementation: str | None = None,
        query_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        layer_cls = decoder_layer_class(family)  # ValueError naming a family that cannot serve
        backend = attn_implementation or ATTENTION_NAME
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attn_implementation {backend!r} is not one of {ATTENTION_BACKENDS}")
        if family == "gemma2" and backend == "sdpa":
            raise ValueError(
                f"attn_implementation 'sdpa' cannot soft-cap Gemma-2's attention logits; use {ATTENTION_NAME!r} or 'eager'"
            )
        if query_chunk_size is not None and query_chunk_size < 1:
            raise ValueError(f"query_chunk_size must be >= 1, got {query_chunk_size}")
        if backend == ATTENTION_NAME:
            register_attention()
        config._attn_implementation = backend
        self.attn_implementation = backend
        self.query_chunk_size = query_chunk_size
        self.family = family
        self.layer_index = layer_index
        self.source = "unloaded"  # where the weights came from (set by llm.factory)
        self.hidden_size = int(config.hidden_size)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        self.rotary_size = rotary_size(config, family)  # head_dim, or the rotated part of a head
        self.layer = layer_cls(config, layer_index)
        for module in self.layer.modules():
            if hasattr(module, "is_causal"):
                module.is_causal = False  # non-causal on every backend, not only the ones given the kwarg
        self.requires_grad_(False)
        self.layer.eval()

    def train(self, mode: bool = True) -> "FrozenLLMBlock":
        """Frozen: the layer stays in eval mode (no attention dropout) whatever ``mode`` is."""
        super().train(mode)
        self.layer.eval()
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(self.layer.parameters()).dtype

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Weight name (relative to the layer, e.g. ``self_attn.q_proj.weight``) -> shape."""
        return {k: tuple(v.shape) for k, v in self.layer.state_dict().items()}

    def load_layer_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Take the layer's weights (names relative to the layer), checked for exact keys and shapes.

        Tensors are assigned (``assign=True``), so loading into a ``meta``-built block allocates
        only what ``state_dict`` already holds. They are then cast to the block's dtype.
        """
        dtype = self.dtype
        check_layer_weights(state_dict, self.expected_shapes(), source="state_dict")
        self.layer.load_state_dict(state_dict, strict=True, assign=True)
        self.layer.to(dtype)
        self.requires_grad_(False)

    @torch.no_grad()
    def init_random(self, seed: int, initializer_range: float = 0.02) -> None:
        """Random weights for the control: normal(0, initializer_range) matrices, zero biases,
        norms at their identity (ones; zeros for Gemma's ``1 + w`` norms, found by probing each
        norm with zero weights: an identity-at-zero norm does not vanish). Deterministic in
        ``seed`` (a private generator on CPU), so the block can be rebuilt from its name alone."""
        if any(p.is_meta for p in self.layer.parameters()):
            self.layer.to_empty(device="cpu")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        zero_identity = self._norms_identity_at_zero()
        for name, param in self.layer.named_parameters():
            if name.endswith("norm.weight"):
                value = torch.zeros(param.shape) if name in zero_identity else torch.ones(param.shape)
            elif name.endswith(".bias"):
                value = torch.zeros(param.shape)
            else:
                value = torch.empty(param.shape).normal_(0.0, initializer_range, generator=generator)
            param.copy_(value)

    @torch.no_grad()
    def _norms_identity_at_zero(self) -> set[str]:
        """Names of the norm weights whose identity value is 0 (a ``x̂ · (1 + w)`` norm, Gemma's):
        with the weight set to zero such a norm still passes its input through."""
        found = set()
        for module_name, module in self.layer.named_modules():
            weight = getattr(module, "weight", None)
            if not module_name.endswith("norm") or not isinstance(weight, nn.Parameter) or weight.dim() != 1:
                continue
            saved = [(p, p.detach().clone()) for p in module.parameters(recurse=False)]
            for p, _ in saved:
                p.zero_()  # weight and any bias
            out = module(torch.randn(2, weight.shape[0], dtype=weight.dtype, device=weight.device))
            for p, value in saved:
                p.copy_(value)
            if out.abs().max() > 0:
                found.add(f"{module_name}.weight")
        return found

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, d_llm) -> (B, T, d_llm): every token attends to every token, no positions."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(f"expected (B, T, {self.hidden_size}), got {tuple(hidden_states.shape)}")
        in_dtype = hidden_states.dtype
        x = hidden_states.to(self.dtype)
        batch, tokens, _ = x.shape
        cos = x.new_ones(1, tokens, self.rotary_size)  # (1, T, rotary): RoPE with cos=1, sin=0 is the identity
        sin = x.new_zeros(1, tokens, self.rotary_size)  # (1, T, rotary)
        extra = {"query_chunk_size": self.query_chunk_size} if self.attn_implementation == ATTENTION_NAME else {}
        out = self.layer(
            x,
            attention_mask=None,
            position_ids=None,
            past_key_values=None,
            position_embeddings=(cos, sin),
            is_causal=False,
            **extra,
        )
        if isinstance(out, tuple):  # transformers < 4.54 returned (hidden_states, ...)
            out = out[0]
        return out.to(in_dtype)  # (B, T, d_llm)
