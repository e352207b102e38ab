"""V_LLM: one frozen decoder layer of a pre-trained LLM, as a plain token mixer.

This module is the only place that knows ``transformers``' calling contract for decoder layers
(pinned: transformers 5.23; the block's tests also pass with 5.17.0, the GPU machines' version).
Elsewhere the block is ``(B, T, d_llm) -> (B, T, d_llm)``.

What the contract is in 5.23 (read from ``models/*/modeling_*.py`` and
``integrations/sdpa_attention.py``):

- The decoder-layer classes are ``LlamaDecoderLayer``, ``Gemma2DecoderLayer``,
  ``MistralDecoderLayer`` and ``Qwen2DecoderLayer``; each takes ``(config, layer_idx)``.
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

import importlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from medvisionllama.llm.attention_kernels import ATTENTION_NAME, register_attention
from medvisionllama.llm.sources import check_layer_weights

if TYPE_CHECKING:
    from transformers import PretrainedConfig

#: family -> (transformers module, decoder-layer class). The modules are imported when a block of
#: that family is built (importing all four costs seconds in every job).
DECODER_LAYERS: dict[str, tuple[str, str]] = {
    "llama": ("transformers.models.llama.modeling_llama", "LlamaDecoderLayer"),
    "mistral": ("transformers.models.mistral.modeling_mistral", "MistralDecoderLayer"),
    "qwen2": ("transformers.models.qwen2.modeling_qwen2", "Qwen2DecoderLayer"),
    "gemma2": ("transformers.models.gemma2.modeling_gemma2", "Gemma2DecoderLayer"),
}
#: attention backends: ours (the default, memory-efficient) and transformers' two references.
#: ``sdpa`` cannot soft-cap, so Gemma-2 accepts only ours and ``eager``.
ATTENTION_BACKENDS = (ATTENTION_NAME, "sdpa", "eager")


def decoder_layer_class(family: str) -> type[nn.Module]:
    """The transformers decoder-layer class of ``family``."""
    module, name = DECODER_LAYERS[family]
    return getattr(importlib.import_module(module), name)


class FrozenLLMBlock(nn.Module):
    """One frozen LLM decoder layer without RoPE and without a causal mask (V_LLM).

    Built empty (on any device, ``meta`` included); weights arrive through
    :meth:`load_layer_state_dict` or :meth:`init_random`. Parameters never require gradients,
    the layer stays in eval mode, and it runs in its own dtype (bf16 on CUDA, float32 on CPU):
    inputs are cast to it and outputs cast back, so gradients still flow to the layers around it.

    Args:
        config: the full model's ``transformers`` config (from the registry).
        family: ``llama``, ``gemma2``, ``mistral`` or ``qwen2``.
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
        if family not in DECODER_LAYERS:
            raise ValueError(f"family {family!r} is not one of {sorted(DECODER_LAYERS)}")
        layer_cls = decoder_layer_class(family)
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
        norms at their identity (ones; zeros for Gemma-2's ``1 + w`` norms). Deterministic in
        ``seed`` (a private generator on CPU), so the block can be rebuilt from its name alone."""
        if any(p.is_meta for p in self.layer.parameters()):
            self.layer.to_empty(device="cpu")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        for name, param in self.layer.named_parameters():
            if name.endswith("norm.weight"):
                value = torch.zeros(param.shape) if self.family == "gemma2" else torch.ones(param.shape)
            elif name.endswith(".bias"):
                value = torch.zeros(param.shape)
            else:
                value = torch.empty(param.shape).normal_(0.0, initializer_range, generator=generator)
            param.copy_(value)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, d_llm) -> (B, T, d_llm): every token attends to every token, no positions."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(f"expected (B, T, {self.hidden_size}), got {tuple(hidden_states.shape)}")
        in_dtype = hidden_states.dtype
        x = hidden_states.to(self.dtype)
        batch, tokens, _ = x.shape
        cos = x.new_ones(1, tokens, self.head_dim)  # (1, T, head_dim): RoPE with cos=1, sin=0 is the identity
        sin = x.new_zeros(1, tokens, self.head_dim)  # (1, T, head_dim)
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
